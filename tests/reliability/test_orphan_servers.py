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

import psutil
import pytest

STARTUP_S = 180.0  # a temporary server on a loaded 2-core machine
GONE_WITHIN_S = 10.0


def start_run(home: Path, output: int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
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


@pytest.mark.parametrize(
    "kill_signal", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"]
)
def test_a_killed_run_leaves_no_child_process(kill_signal: int, tmp_path: Path) -> None:
    command = start_run(tmp_path / "home")
    cli = psutil.Process(command.pid)
    children: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + STARTUP_S
        while not listening_children(cli):
            assert command.poll() is None, "the run ended before its server was up"
            assert time.monotonic() < deadline, "no server came up"
            time.sleep(0.2)
        children = cli.children(recursive=True)

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


def test_a_finished_run_delivers_its_logs_then_stops_its_server(tmp_path: Path) -> None:
    """The run's last log lines reach its temporary server before the server stops: no
    "Error logging to API" at exit."""
    command = start_run(tmp_path / "home", output=subprocess.PIPE)
    stdout, stderr = command.communicate(timeout=STARTUP_S + 120)
    output = stdout.decode() + stderr.decode()
    assert command.returncode == 0, output
    assert "Error logging to API" not in output
    assert "Finished in state Completed" in output
