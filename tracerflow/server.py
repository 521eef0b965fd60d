"""A local Prefect server for the UI, without learning Prefect first: ``tracerflow server up``.

It is Prefect's own ``prefect server start``, bound to 127.0.0.1, started in its own session so it
outlives the command, with its pid, URL, database and log under ``$TRACERFLOW_HOME/server/``.
``up`` returns once ``/api/health`` answers (``--background`` alone returns before the server is
healthy). Its database is SQLite under ``$TRACERFLOW_HOME/prefect`` unless ``--database`` or
``PREFECT_API_DATABASE_CONNECTION_URL`` names a PostgreSQL one; a password in that URL is never
written or printed.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from tracerflow.errors import ConfigError, TracerflowError
from tracerflow.settings import Settings

DEFAULT_PORT = 4200
# The async drivers Prefect's server supports (its docs: SQLite and PostgreSQL only).
DATABASE_SCHEMES = ("postgresql+asyncpg", "sqlite+aiosqlite")
DATABASE_ENV = "PREFECT_API_DATABASE_CONNECTION_URL"
# Prefect reads its newer name first: when both are set, that one is the database it uses.
DATABASE_ENV_NEWER = "PREFECT_SERVER_DATABASE_CONNECTION_URL"
PASSWORD_PARAMETER = re.compile(r"([?&])password=[^&#]*")
# A Python exception line of a traceback (`asyncpg.exceptions.InvalidPasswordError: ...`).
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|error)(: .*)?$")


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    healthy: bool
    pid: int | None
    url: str | None
    log_path: Path
    database: str | None = None  # the server's database URL, its password masked

    @property
    def api_url(self) -> str | None:
        return f"{self.url}/api" if self.url else None


def server_dir(settings: Settings) -> Path:
    return settings.home / "server"


def _split(url: str) -> tuple[str, str, str, str] | None:
    """(scheme, userinfo, hostport, rest) of ``url``, by string surgery rather than a URL
    parser, so that nothing else of the URL changes and a malformed one is handled all the same."""
    scheme, separator, rest = url.partition("://")
    if not separator:
        return None
    netloc_end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    userinfo, _, hostport = rest[:netloc_end].rpartition("@")
    return scheme, userinfo, hostport, rest[netloc_end:]


def mask_password(url: str) -> str:
    """``url`` with any password (``user:PASSWORD@host`` or ``?password=``) replaced by ``***``."""
    parts = _split(url)
    if parts is None:
        return url
    scheme, userinfo, hostport, tail = parts
    if ":" in userinfo:
        userinfo = f"{userinfo.split(':', 1)[0]}:***"
    tail = PASSWORD_PARAMETER.sub(r"\1password=***", tail)
    return f"{scheme}://{userinfo}{'@' if userinfo else ''}{hostport}{tail}"


def _passwords(url: str) -> list[str]:
    """Every password ``url`` holds, as written and percent-decoded."""
    parts = _split(url)
    if parts is None:
        return []
    _, userinfo, _, tail = parts
    found = [userinfo.split(":", 1)[1]] if ":" in userinfo else []
    found += [match.group(0).split("=", 1)[1] for match in PASSWORD_PARAMETER.finditer(tail)]
    return [variant for password in found if password for variant in (password, unquote(password))]


def database_url(settings: Settings, database: str | None = None) -> str:
    """The database the server will use: ``database``, else Prefect's own environment variables,
    else SQLite under Prefect's home. Raises ConfigError naming a URL of another kind."""
    url = (
        database
        or os.environ.get(DATABASE_ENV_NEWER)
        or os.environ.get(DATABASE_ENV)
        or f"sqlite+aiosqlite:///{prefect_home(settings)}/prefect.db"
    )
    scheme = url.partition("://")[0] if "://" in url else ""
    if scheme not in DATABASE_SCHEMES:
        raise ConfigError(
            f"database URL must start with postgresql+asyncpg:// or sqlite+aiosqlite://, got "
            f"{mask_password(url)!r}"
        )
    return url


def prefect_home(settings: Settings) -> str:
    return os.environ.get("PREFECT_HOME", str(settings.prefect_home))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    """True when the Prefect server at ``url`` (``http://host:port``, without ``/api``) answers
    its health check; any error (refused, timed out, not HTTP) is an unhealthy server."""
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def status(settings: Settings) -> ServerStatus:
    folder = server_dir(settings)
    pid_file, url_file = folder / "server.pid", folder / "server.url"
    database_file = folder / "server.database"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    url = url_file.read_text().strip() if url_file.exists() else None
    database = database_file.read_text().strip() if database_file.exists() else None
    running = pid is not None and _pid_alive(pid)
    return ServerStatus(
        running=running,
        healthy=running and url is not None and is_healthy(url),
        pid=pid if running else None,
        url=url if running else None,
        log_path=folder / "server.log",
        database=database if running else None,
    )


def reusable_api_url(settings: Settings) -> str | None:
    """The API URL of this home's ``tracerflow server up`` server when a run can use it: its pid
    runs Prefect's server on the recorded port and the URL answers. None for no server, a dead
    one, or a pid that now belongs to another program (a run then starts its own server)."""
    current = status(settings)
    if not current.healthy or current.pid is None or current.url is None:
        return None
    if not _runs_prefect_server(current.pid, current.url):
        return None
    return current.api_url


def _runs_prefect_server(pid: int, url: str) -> bool:
    """Whether ``pid`` is ``prefect server start ... --port <url's port>`` (what ``up`` starts).
    Where /proc cannot tell (not Linux), a live pid and a healthy URL are all there is to go on."""
    return runs_command(pid, "prefect server start", f"--port {url.rpartition(':')[2]}")


def runs_command(pid: int, *parts: str) -> bool:
    """Whether ``pid`` runs a command line holding each of ``parts`` (a recorded pid may now be
    another program's). Where /proc cannot tell (not Linux), whether the pid is alive."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return not Path("/proc/self/cmdline").exists() and _pid_alive(pid)
    command = " ".join(arguments)
    return all(part in command for part in parts)


def up(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    timeout: float = 120.0,
    database: str | None = None,
) -> ServerStatus:
    """Start the server unless one of ours is running; wait until it is healthy.

    ``database``: a ``postgresql+asyncpg://`` or ``sqlite+aiosqlite://`` URL (see
    ``database_url`` for the default). If the server exits while starting (its database cannot
    be reached, say), this raises at once with the reason from its log.
    """
    url_of_database = database_url(settings, database)
    masked_database = mask_password(url_of_database)
    current = status(settings)
    if current.running:
        if database is not None and current.database != masked_database:
            raise TracerflowError(
                f"a server is already running (pid {current.pid}) on "
                f"{current.database or 'an unrecorded database'}; `tracerflow server down` it first"
            )
        return current
    if not 1 <= port <= 65535:
        raise ConfigError(f"port must be 1-65535, got {port}")
    folder = server_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if is_healthy(url, timeout=1.0):
        raise TracerflowError(f"another server already answers on {url}; choose another --port")
    env = {
        **os.environ,
        "PREFECT_HOME": prefect_home(settings),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_API_URL": f"{url}/api",
        # Set, never inherited, so that server.database names the database the server uses.
        DATABASE_ENV_NEWER: url_of_database,
    }
    env.pop("PREFECT_API_URL", None)  # the server must not try to talk to another server
    env.pop(DATABASE_ENV, None)
    log_path = folder / "server.log"
    log_start = log_path.stat().st_size if log_path.exists() else 0
    log = open(log_path, "ab")  # noqa: SIM115 (the child keeps the file open)
    process = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,  # outlive this command; `down` ends the whole process group
    )
    (folder / "server.pid").write_text(str(process.pid))
    (folder / "server.url").write_text(url)
    (folder / "server.database").write_text(masked_database)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            reason = _exit_reason(log_path, log_start, url_of_database)
            raise TracerflowError(
                f"the Prefect server on {masked_database} exited with code {process.returncode}"
                f"{f' ({reason})' if reason else ''}; see {log_path}"
            )
        if is_healthy(url):
            return status(settings)
        time.sleep(0.5)
    down(settings)
    raise TracerflowError(
        f"the Prefect server did not become healthy within {timeout:.0f} s; see "
        f"{folder / 'server.log'}"
    )


def _exit_reason(log_path: Path, start: int, database: str) -> str:
    """The last exception line the server logged since ``start`` (else its last line), with the
    database password masked should the line quote the URL."""
    with open(log_path, "rb") as log:
        log.seek(start)
        lines = [line.strip() for line in log.read().decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    exceptions = [line for line in lines if EXCEPTION_LINE.match(line)]
    reason = (exceptions or lines or [""])[-1]
    for password in _passwords(database):
        reason = reason.replace(password, "***")
    return reason


def down(settings: Settings, timeout: float = 30.0) -> bool:
    """Stop our server (the whole process group); True if one was running."""
    current = status(settings)
    folder = server_dir(settings)
    if current.pid is None:
        (folder / "server.pid").unlink(missing_ok=True)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(current.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(current.pid):
        _reap(current.pid)
        time.sleep(0.2)
    if _pid_alive(current.pid):
        os.killpg(current.pid, signal.SIGKILL)
        _reap(current.pid)
    (folder / "server.pid").unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    """Collect the exit status when the server is our own child (else it lingers as a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
