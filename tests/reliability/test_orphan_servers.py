"""A killed `tracerflow run` leaves no Prefect server behind (each one holds ~250 MB).

The real command on the toy preset, in its own process group and without PREFECT_API_URL, so it
starts its temporary server; once that server listens, the command is killed (SIGKILL: no
handler of the command can run; SIGTERM: what `kill` and service managers send).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

STARTUP_S = 180.0  # a temporary server on a loaded 2-core machine
GONE_WITHIN_S = 10.0


def start_run(home: Path, output: Any = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TRACERFLOW_HOME": str(home),
    }
    env.pop("PREFECT_API_URL", None)
    prompt = "Mary and John went to the store, Jon gave a drink to"
    return subprocess.Popen(
        [sys.executable, "-m", "tracerflow.cli", "run", "--preset", "toy-clt", "--prompt", prompt],
        env=env,
        stdout=output,
        stderr=output,
        start_new_session=True,
        # Ctrl-C as at a terminal, even when this suite runs in the background (which would
        # hand the command SIGINT ignored).
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def listening_children(process: psutil.Process) -> list[psutil.Process]:
    """The command's descendants that accept connections (its temporary API server)."""
    found = []
    for child in process.children(recursive=True):
        try:
            if any(c.status == psutil.CONN_LISTEN for c in child.net_connections("tcp")):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def alive(process: psutil.Process) -> bool:
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kill_signal", "to_group"),
    [(signal.SIGKILL, False), (signal.SIGTERM, False), (signal.SIGINT, True)],
    ids=["SIGKILL", "SIGTERM", "Ctrl-C"],
)
def test_a_killed_run_leaves_no_child_process(
    kill_signal: int, to_group: bool, tmp_path: Path
) -> None:
    """Ctrl-C signals the terminal's whole process group: the temporary server used to get it
    too and die first, and the run went on without its API for minutes."""
    log = tmp_path / "output.log"
    with log.open("wb") as output:
        command = start_run(tmp_path / "home", output=output)
    cli = psutil.Process(command.pid)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + STARTUP_S
        while not listening_children(cli) or (
            to_group and b"Beginning flow run" not in log.read_bytes()  # Ctrl-C mid-run
        ):
            assert command.poll() is None, "the run ended before its server was up"
            assert time.monotonic() < deadline, "no server came up"
            time.sleep(0.2)
        children = cli.children(recursive=True)

        if to_group:
            os.killpg(command.pid, kill_signal)
        else:
            os.kill(command.pid, kill_signal)
        command.wait(timeout=GONE_WITHIN_S)
        deadline = time.monotonic() + GONE_WITHIN_S
        while any(alive(child) for child in children) and time.monotonic() < deadline:
            time.sleep(0.2)

        left = [f"{child.pid} {child.cmdline()}" for child in children if alive(child)]
        assert not left, f"left behind after {kill_signal!r}: {left}"
    finally:  # never leave this test's own processes behind, whatever failed
        for process in [cli, *children]:
            if alive(process):
                process.kill()


@pytest.mark.slow
def test_a_finished_run_delivers_its_logs_then_stops_its_server(tmp_path: Path) -> None:
    """The run's last log lines reach its temporary server before the server stops: no
    "Error logging to API" at exit."""
    command = start_run(tmp_path / "home", output=subprocess.PIPE)
    stdout, stderr = command.communicate(timeout=STARTUP_S + 120)
    output = stdout.decode() + stderr.decode()
    assert command.returncode == 0, output
    assert "Error logging to API" not in output
    assert "Finished in state Completed" in output
