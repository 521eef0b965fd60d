"""A temporary Prefect API server that cannot outlive the command that started it.

Without ``PREFECT_API_URL`` Prefect starts its own temporary server (``SubprocessASGIServer``):
a ``uvicorn`` child stopped by an ``atexit`` hook, so a ``tracerflow run`` killed by SIGKILL or
SIGTERM leaves it running (~250 MB each). ``prefect_api()`` starts the same server itself, as a
child that watches its parent: the child asks Linux to send it SIGTERM when the parent dies
(``prctl(PR_SET_PDEATHSIG)``) and, on any platform, a thread in it polls the parent pid and ends
the server when the parent is gone. SIGTERM of the command itself stops the server at once.

A run needs no server of its own where one is up already: ``PREFECT_API_URL``, else the home's
``tracerflow server up`` server when it runs and answers (``tracerflow.server.reusable_api_url``),
else the temporary server an earlier run of this home left lingering. Starting a server costs
seconds (~5 s of a cached re-run's ~10 s); a new one boots while the caller's ``while_starting``
(importing the flow, say) runs beside it.

**Lingering.** A run that ends (done or failed, not killed) hands its server over instead of
stopping it: it records the server in ``$TRACERFLOW_HOME/server/temporary.json``, and the server,
seeing its parent gone, stays up while runs hold its lease (a shared ``flock`` of
``server/temporary.lease``, which the kernel releases when a run dies) and for
``TRACERFLOW_SERVER_LINGER_S`` (600 s) after the last one let go; then it stops. A run killed by a
signal hands nothing over: its server stops with it, as before. ``tracerflow server down`` stops a
lingering one too.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from tracerflow.errors import TracerflowError
from tracerflow.fsutil import write_text_atomically
from tracerflow.server import is_healthy, reusable_api_url, runs_command, server_dir

try:
    import fcntl

    _CAN_LINGER = True  # the lease is a flock: POSIX
except ImportError:  # pragma: no cover - Windows
    _CAN_LINGER = False

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.5
_STOP_GRACE_S = 5.0
_PORT_IN_USE = 3  # uvicorn's exit code when it cannot bind

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def prefect_api(
    while_starting: Callable[[], object] = lambda: None,
    say: Callable[[str], object] = logger.info,
) -> Iterator[str]:
    """Yield the API URL this run talks to: ``PREFECT_API_URL`` when set (a real server), else
    the home's running ``tracerflow server up`` server's, else a temporary server's, started here
    and stopped when the block ends or this process dies. ``while_starting()`` runs before the
    block, while a temporary server boots (on the machine's other core); ``say`` tells which
    server it is."""
    from prefect.settings import PREFECT_API_URL

    from tracerflow.settings import get_settings

    configured = PREFECT_API_URL.value()
    if configured:
        while_starting()
        yield str(configured)
        return
    settings = get_settings()
    folder = server_dir(settings)  # where a lingering server is recorded
    lasting = reusable_api_url(settings)
    if lasting is not None:
        say(f"Prefect server: the running `tracerflow server up` one at {lasting}")
        while_starting()
        with _talking_to(lasting, {PREFECT_API_URL: lasting}):  # a lasting server: heartbeats
            yield lasting
        return
    lingering = take_lingering_server(folder)
    if lingering is not None:
        api_url, lease = lingering
        say(f"Prefect server: the temporary one an earlier run left up, at {api_url}")
        try:
            while_starting()
            with _talking_to(api_url, run_settings(api_url)):
                yield api_url
        finally:
            _deliver_queued_logs()
            os.close(lease)  # the server's idle time starts when no run holds its lease
        return
    say("Prefect server: starting a temporary one for this run")
    with _sigterm_as_exit():
        linger_s = settings.server_linger_s if _CAN_LINGER else 0.0
        relaunch = functools.partial(_launch, linger_s, folder)
        launched = [relaunch()]  # the one to stop, whichever started in the end
        ended = False  # the run ended, done or failed; not interrupted or killed
        try:
            while_starting()
            api_url = _wait_until_healthy(launched, relaunch)
            try:
                with _talking_to(api_url, run_settings(api_url)):
                    yield api_url
            except Exception:
                ended = True
                raise
            ended = True
        finally:
            _deliver_queued_logs()
            process, base_url = launched[-1]
            if not (ended and linger_s > 0 and _hand_over(folder, process, base_url)):
                stop(process)


@contextlib.contextmanager
def _talking_to(api_url: str, settings: dict[Any, Any]) -> Iterator[None]:
    """Prefect's settings for the block, and ``PREFECT_API_URL`` in the environment for worker
    processes (Dask) too."""
    from prefect.settings import temporary_settings

    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = api_url
    try:
        with temporary_settings(updates=settings):
            yield
    finally:
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous


def run_settings(api_url: str) -> dict[Any, Any]:
    """The Prefect settings a run against the temporary server at ``api_url`` runs with.

    Flow run heartbeats are off unless the user set them (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``):
    they let a lasting server mark a run that died as crashed, but this server dies with the run,
    so nobody can read them, and the end of every flow run waited up to 1 s for Prefect's
    heartbeat thread (it sleeps in 1 s steps).
    """
    from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY

    settings: dict[Any, Any] = {PREFECT_API_URL: api_url}
    if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" not in os.environ:
        settings[PREFECT_FLOWS_HEARTBEAT_FREQUENCY] = None
    return settings


def _launch(linger_s: float, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A temporary server's process, started, and its base URL; ``_wait_until_healthy`` next.
    ``linger_s`` > 0: it may be handed over when the run ends (``_hand_over``), in ``folder``
    (the home's ``server/``)."""
    from prefect.settings import get_current_settings

    env = {
        **os.environ,
        **get_current_settings().to_environment_variables(exclude_unset=True),
        # What Prefect's own temporary server sets: no UI, the ephemeral server's services.
        "PREFECT_UI_ENABLED": "0",
        "PREFECT__SERVER_EPHEMERAL": "1",
        "PREFECT__SERVER_FINAL": "1",
    }
    env.pop("PREFECT_API_URL", None)
    log_path = _log_path()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    # Linux sends the parent-death signal when the *thread* that started the child ends: use it
    # only from the main thread (which lives as long as the process); the watchdog covers the rest.
    main_thread = threading.current_thread() is threading.main_thread()
    port = _free_port()
    arguments = [str(os.getpid()), str(port), str(int(main_thread)), str(linger_s), str(folder)]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", __name__, *arguments],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # Out of the terminal's process group: Ctrl-C reaches the command alone, which
            # stops its run and then this server; the server dying first left the run going
            # on without its API for minutes.
            start_new_session=True,
        )
    return process, f"http://127.0.0.1:{port}"


# --- a server lingering after its run --------------------------------------------------------

LINGER_RECORD = "temporary.json"
LINGER_LEASE = "temporary.lease"
_LEASE_WAIT_S = _STOP_GRACE_S + 5.0  # a server stopping holds the lease until it is gone


def _hand_over(folder: Path, process: subprocess.Popen[bytes], base_url: str) -> bool:
    """Leave ``process`` up for the next run: record it in ``folder`` (the server, once its
    parent is gone, lingers only when the record names it). False when it is not running."""
    if process.poll() is not None:
        return False
    folder.mkdir(parents=True, exist_ok=True)
    record = {"pid": process.pid, "url": base_url}
    write_text_atomically(folder / LINGER_RECORD, json.dumps(record) + "\n")
    return True


def lingering_server(folder: Path) -> tuple[int, str] | None:
    """(pid, base URL) of the lingering temporary server ``folder`` records, when that pid still
    runs one; else None."""
    try:
        record = json.loads((folder / LINGER_RECORD).read_text())
        pid, url = int(record["pid"]), str(record["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return (pid, url) if runs_command(pid, "-m tracerflow.flows.temporary_server") else None


def take_lingering_server(folder: Path) -> tuple[str, int] | None:
    """The API URL of the temporary server an earlier run of this home left up, and the lease
    (an open file holding a shared flock) that keeps it up until it is closed; None when there
    is none that answers. The lease is taken before the server is checked: a server that has
    not started stopping by then cannot start while it is held."""
    if not _CAN_LINGER or lingering_server(folder) is None:
        return None
    lease = os.open(folder / LINGER_LEASE, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + _LEASE_WAIT_S
    while True:
        try:
            fcntl.flock(lease, fcntl.LOCK_SH | fcntl.LOCK_NB)
            break
        except BlockingIOError:  # the server is checking whether it is idle, or stopping
            if time.monotonic() > deadline:
                os.close(lease)
                return None
            time.sleep(0.05)
    found = lingering_server(folder)
    if found is None or not is_healthy(found[1]):
        os.close(lease)
        return None
    return f"{found[1]}/api", lease


def stop_lingering_server(folder: Path) -> bool:
    """Stop the lingering temporary server ``folder`` records (``tracerflow server down``); True
    when there was one."""
    found = lingering_server(folder)
    (folder / LINGER_RECORD).unlink(missing_ok=True)
    if found is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(found[0], signal.SIGTERM)
    return True


def _log_path() -> Path:
    from tracerflow.settings import get_settings

    return get_settings().prefect_home / "temporary-server.log"


def _wait_until_healthy(
    launched: list[tuple[subprocess.Popen[bytes], str]],
    relaunch: Callable[[], tuple[subprocess.Popen[bytes], str]],
) -> str:
    """The API URL of the server ``_launch`` started (``launched[-1]``), once it answers; a server
    that could not bind its port is started again on another (appended). Raises when none
    started in time."""
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS

    deadline = time.monotonic() + float(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value())
    while True:
        process, base_url = launched[-1]
        while time.monotonic() < deadline:
            if process.poll() is not None:
                break
            if is_healthy(base_url):
                return f"{base_url}/api"
            time.sleep(0.2)
        if process.poll() == _PORT_IN_USE and time.monotonic() < deadline:
            launched.append(relaunch())  # another process took the port in between
            continue
        stop(process)
        raise TracerflowError(
            f"the temporary Prefect server did not start (exit code {process.returncode}); see "
            f"{_log_path()}, or start one with `tracerflow server up` and set PREFECT_API_URL"
        )


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after a grace period; always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


def _deliver_queued_logs() -> None:
    """Send the run's last log lines while the server still listens: Prefect ships logs from a
    background worker, and one stopped first prints "Error logging to API" at exit."""
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=5)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """Turn SIGTERM into ``SystemExit(143)`` so ``finally`` blocks (stopping the server) run."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --- the child ---------------------------------------------------------------------------------


def _die_with(parent_pid: int, death_signal: bool, linger_s: float, folder: Path) -> None:
    """End this process when ``parent_pid`` is gone, unless the parent handed it over (the
    record in ``folder`` names it): then once it has lingered (``_linger``). A polling thread
    watches the parent; without lingering, the kernel's parent-death signal on Linux
    (``death_signal``) ends it at once too (the thread also catches a parent that died before
    prctl ran). A lingering server cannot take that signal: it would end with its parent."""
    if death_signal and linger_s <= 0 and sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(_POLL_S)
        if linger_s > 0 and _recorded(folder):
            _linger(folder, linger_s)
        os.kill(os.getpid(), signal.SIGTERM)  # uvicorn shuts down gracefully on SIGTERM
        time.sleep(_STOP_GRACE_S)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _recorded(folder: Path) -> bool:
    """Whether ``folder``'s lingering record names this process."""
    try:
        return int(json.loads((folder / LINGER_RECORD).read_text())["pid"]) == os.getpid()
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _linger(folder: Path, linger_s: float) -> None:
    """Return when no run has held the lease for ``linger_s`` seconds, or at once when idle and
    no longer the recorded server (``server down``, or another run's server recorded since);
    then holding the lease exclusively (until this process ends) with the record removed, so no
    run takes this server as it stops."""
    lease = os.open(folder / LINGER_LEASE, os.O_RDWR | os.O_CREAT, 0o600)
    idle_since: float | None = time.monotonic()
    while True:
        try:
            fcntl.flock(lease, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a run holds it
            idle_since = None
        else:
            now = time.monotonic()
            idle_since = now if idle_since is None else idle_since
            if not _recorded(folder):
                return
            if now - idle_since >= linger_s:
                (folder / LINGER_RECORD).unlink(missing_ok=True)
                return
            fcntl.flock(lease, fcntl.LOCK_UN)
        time.sleep(_POLL_S)


def _serve(parent_pid: int, port: int, death_signal: bool, linger_s: float, folder: Path) -> None:
    """Run Prefect's API app under uvicorn, as ``SubprocessASGIServer`` does."""
    import runpy

    _die_with(parent_pid, death_signal, linger_s, folder)
    sys.argv = [
        "uvicorn",
        "--app-dir",
        str(Path(__import__("prefect").__file__).parent.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _serve(
        int(sys.argv[1]),
        int(sys.argv[2]),
        sys.argv[3] == "1",
        float(sys.argv[4]),
        Path(sys.argv[5]),
    )
