"""A local Prefect server for the UI, without learning Prefect first: ``tracerflow server up``.

It is Prefect's own ``prefect server start``, bound to 127.0.0.1, started in its own session so it
outlives the command, with its pid and log under ``$TRACERFLOW_HOME/server/``. ``up`` returns once
``/api/health`` answers (``--background`` alone returns before the server is healthy).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tracerflow.errors import ConfigError, TracerflowError
from tracerflow.settings import Settings

DEFAULT_PORT = 4200


@dataclass(frozen=True)
class ServerStatus:
    running: bool
    healthy: bool
    pid: int | None
    url: str | None
    log_path: Path

    @property
    def api_url(self) -> str | None:
        return f"{self.url}/api" if self.url else None


def server_dir(settings: Settings) -> Path:
    return settings.home / "server"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/health", timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def status(settings: Settings) -> ServerStatus:
    folder = server_dir(settings)
    pid_file, url_file = folder / "server.pid", folder / "server.url"
    pid = int(pid_file.read_text()) if pid_file.exists() else None
    url = url_file.read_text().strip() if url_file.exists() else None
    running = pid is not None and _pid_alive(pid)
    return ServerStatus(
        running=running,
        healthy=running and url is not None and is_healthy(url),
        pid=pid if running else None,
        url=url if running else None,
        log_path=folder / "server.log",
    )


def up(
    settings: Settings, host: str = "127.0.0.1", port: int = DEFAULT_PORT, timeout: float = 120.0
) -> ServerStatus:
    """Start the server unless one of ours is running; wait until it is healthy."""
    current = status(settings)
    if current.running:
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
        "PREFECT_HOME": os.environ.get("PREFECT_HOME", str(settings.prefect_home)),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_UI_API_URL": f"{url}/api",
    }
    env.pop("PREFECT_API_URL", None)  # the server must not try to talk to another server
    log = open(folder / "server.log", "ab")  # noqa: SIM115 (the child keeps the file open)
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
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TracerflowError(
                f"the Prefect server exited with code {process.returncode}; "
                f"see {folder / 'server.log'}"
            )
        if is_healthy(url):
            return status(settings)
        time.sleep(0.5)
    down(settings)
    raise TracerflowError(
        f"the Prefect server did not become healthy within {timeout:.0f} s; see "
        f"{folder / 'server.log'}"
    )


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
