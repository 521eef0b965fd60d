"""One real PostgreSQL 15 server on a free loopback port, for tests and benchmarks.

    with PostgresServer() as postgres:
        conninfo = postgres.create_database("lake")  # dbname=lake host=127.0.0.1 port=... user=...

Its data, socket and log live in one temporary folder that ``stop()`` removes. ``initdb`` and
``postgres`` refuse to run as root, so as root the folder belongs to the ``postgres`` user and the
server binaries run through ``runuser``; otherwise they run as the current user. Authentication
is ``trust`` for the superuser ``postgres``: the server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

import psutil

BIN_DIR = Path(os.environ.get("TRACERFLOW_PG_BIN", "/usr/lib/postgresql/15/bin"))
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
CLIENT_BINARIES = ("psql", "createdb")
SYSTEM_USER = "postgres"  # who owns the data folder when we are root
STOP_TIMEOUT_S = 30.0
DATABASE_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresUnavailable(RuntimeError):
    """The PostgreSQL binaries (or the system user they must run as) are missing."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresServer:
    """A throwaway PostgreSQL server: ``start``, ``create_database``, ``restart``, ``stop``."""

    def __init__(self, bin_dir: Path = BIN_DIR) -> None:
        self.bin_dir = bin_dir
        self.folder: Path | None = None
        self.port: int | None = None
        self._as_root = os.geteuid() == 0

    @property
    def data_dir(self) -> Path:
        return self._require_folder() / "data"

    @property
    def log_path(self) -> Path:
        return self._require_folder() / "server.log"

    def start(self) -> PostgresServer:
        """Create a cluster in a new folder and start it on a free port."""
        if self.folder is not None:
            raise RuntimeError("the PostgreSQL server is already started; use restart()")
        self._check_binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="tracerflow-pg-"))  # mode 0700
        try:
            if self._as_root:
                shutil.chown(self.folder, SYSTEM_USER)
            # --no-sync: a test cluster need not survive a power cut; it saves seconds of fsync.
            self._run_as_owner(
                self._bin("initdb"), "-D", str(self.data_dir), "-A", "trust", "-U", "postgres",
                "-E", "UTF8", "--locale=C", "--no-sync",
            )  # fmt: skip
            self.port = free_port()
            self._pg_ctl("start", "-w", "-l", str(self.log_path), "-o", self._server_options())
        except BaseException:
            self.stop()  # leave no folder (or half-started server) behind
            raise
        return self

    def stop(self) -> None:
        """Stop the server (fast shutdown: open sessions are ended) and remove its folder."""
        if self.folder is None:
            return
        if self.running:
            self._shut_down()
        shutil.rmtree(self.folder)
        self.folder = None
        self.port = None

    def restart(self) -> None:
        """Stop and start again on the same port and data (a fault test's restart)."""
        self.pause()
        self.resume()

    def pause(self) -> None:
        """Shut the server down, keeping its data and port, until ``resume`` (a fault test's
        outage)."""
        self._shut_down()

    def resume(self) -> None:
        """Start the paused server again on the same port and data."""
        self._pg_ctl("start", "-w", "-l", str(self.log_path), "-o", self._server_options())

    @property
    def running(self) -> bool:
        if self.folder is None:
            return False
        # pg_ctl status: 0 running, 3 not running, 4 no data folder.
        result = self._run_as_owner(
            self._bin("pg_ctl"), "status", "-D", str(self.data_dir), check=False
        )
        return result.returncode == 0

    @property
    def pid(self) -> int | None:
        """The postmaster's pid (first line of postmaster.pid), while it runs."""
        pid_file = self.data_dir / "postmaster.pid"
        return int(pid_file.read_text().splitlines()[0]) if pid_file.exists() else None

    def create_database(self, name: str) -> str:
        """Create database ``name``; return its libpq conninfo."""
        if not DATABASE_NAME.fullmatch(name):
            raise ValueError(f"database name must match {DATABASE_NAME.pattern}, got {name!r}")
        port = self._require_port()
        result = subprocess.run(
            ["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", name],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"createdb {name}: {result.stderr.strip()}")
        return self.conninfo(name)

    def conninfo(self, database: str) -> str:
        return f"dbname={database} host=127.0.0.1 port={self._require_port()} user=postgres"

    def sqlalchemy_url(self, database: str) -> str:
        """The URL Prefect's server takes (``PREFECT_API_DATABASE_CONNECTION_URL``)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self._require_port()}/{database}"

    def psql(self, database: str, sql: str) -> str:
        """Run ``sql`` in ``database``; return psql's unaligned, tuples-only output."""
        result = subprocess.run(
            ["psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", self.conninfo(database), "-c", sql],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:  # say what PostgreSQL said, not only psql's exit status
            raise RuntimeError(f"psql in {database}: {result.stderr.strip()}")
        return result.stdout.strip()

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _server_options(self) -> str:
        # fsync off for speed (test data need not survive a crash of the machine); the socket in
        # our own folder, since /var/run/postgresql may not exist or not be ours.
        return (
            f"-p {self._require_port()} -k {self.folder} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )

    def _shut_down(self) -> None:
        """Fast shutdown (open sessions are ended), returning once the postmaster is gone."""
        pid = self.pid
        self._pg_ctl("stop", "-w", "-m", "fast")
        # pg_ctl returns when postmaster.pid is removed, a moment before the process exits; wait
        # for the exit so that "stopped" means no process (a zombie awaiting init counts as gone).
        if pid is not None:
            with contextlib.suppress(psutil.NoSuchProcess):
                process = psutil.Process(pid)
                deadline = time.monotonic() + STOP_TIMEOUT_S
                while process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"PostgreSQL (pid {pid}) did not exit after stop")
                    time.sleep(0.05)

    def _pg_ctl(self, *args: str) -> None:
        self._run_as_owner(self._bin("pg_ctl"), args[0], "-D", str(self.data_dir), *args[1:])

    def _run_as_owner(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        if self._as_root:
            command = ("runuser", "-u", SYSTEM_USER, "--", *command)
        result = subprocess.run(command, capture_output=True, text=True)
        if check and result.returncode != 0:
            log_tail = ""
            if self.folder is not None and self.log_path.exists():
                log_tail = "\n".join(self.log_path.read_text().splitlines()[-10:])
            raise RuntimeError(
                f"{' '.join(command)} exited {result.returncode}: "
                f"{result.stdout}{result.stderr}{log_tail}"
            )
        return result

    def _bin(self, name: str) -> str:
        return str(self.bin_dir / name)

    def _check_binaries(self) -> None:
        missing = [n for n in SERVER_BINARIES if not (self.bin_dir / n).is_file()]
        missing += [n for n in CLIENT_BINARIES if shutil.which(n) is None]
        if missing:
            raise PostgresUnavailable(
                f"PostgreSQL binaries missing: {', '.join(missing)} (server binaries looked up "
                f"in {self.bin_dir}, set TRACERFLOW_PG_BIN to change it; clients on PATH)"
            )
        if self._as_root:
            # initdb and postgres refuse root: they run as SYSTEM_USER through runuser.
            try:
                pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root needs a {SYSTEM_USER!r} system user to run PostgreSQL as"
                ) from None
            if shutil.which("runuser") is None:
                raise PostgresUnavailable("running as root needs runuser to start PostgreSQL")

    def _require_folder(self) -> Path:
        if self.folder is None:
            raise RuntimeError("the PostgreSQL server has not been started")
        return self.folder

    def _require_port(self) -> int:
        if self.port is None:
            raise RuntimeError("the PostgreSQL server has not been started")
        return self.port
