"""A killed `tracerflow run` leaves no Prefect server behind (each one holds ~250 MB); a finished
one leaves it up for the next run of its home, for `TRACERFLOW_SERVER_LINGER_S`, and no longer.

The real command on the toy preset, in its own process group and without PREFECT_API_URL, so it
starts its temporary server; once that server listens, the command is killed (SIGKILL: no
handler of the command can run; SIGTERM: what `kill` and service managers send). Lingering is on
(as a user runs it) in the kill tests: a killed run must not hand its server over.
"""

from __future__ import annotations

import fcntl
import json
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


def run_environment(home: Path, linger_s: float) -> dict[str, str]:
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TRACERFLOW_HOME": str(home),
        "TRACERFLOW_SERVER_LINGER_S": str(linger_s),
    }
    env.pop("PREFECT_API_URL", None)
    return env


def start_run(
    home: Path, output: Any = subprocess.DEVNULL, linger_s: float = 600.0
) -> subprocess.Popen[bytes]:
    env = run_environment(home, linger_s)
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
    command = start_run(tmp_path / "home", output=subprocess.PIPE, linger_s=0)
    stdout, stderr = command.communicate(timeout=STARTUP_S + 120)
    output = stdout.decode() + stderr.decode()
    assert command.returncode == 0, output
    assert "Error logging to API" not in output
    assert "Finished in state Completed" in output


# A run as `tracerflow run` makes it, on a flow of one task: the same `prefect_api`, seconds.
TINY_RUN = """
from tracerflow.settings import configure_prefect_defaults

configure_prefect_defaults()
from prefect import flow

from tracerflow.flows.temporary_server import prefect_api


@flow
def tiny() -> int:
    return 1


with prefect_api(say=print):
    assert tiny() == 1
"""
LINGER_S = 3.0


def test_a_finished_runs_server_serves_the_next_run_then_stops(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = run_environment(home, LINGER_S)

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", TINY_RUN], env=env, capture_output=True, timeout=STARTUP_S
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    assert "starting a temporary one" in run()
    record = json.loads((home / "server" / "temporary.json").read_text())
    server = psutil.Process(record["pid"])
    # This test holds the lease from here, as a run does (a run starting on a loaded machine
    # may take longer than LINGER_S to reach the server): the server may not stop under it.
    lease = os.open(home / "server" / "temporary.lease", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lease, fcntl.LOCK_SH)
        assert alive(server)  # its run is over; it lingers
        said = run()
        assert f"the temporary one an earlier run left up, at {record['url']}/api" in said
        assert alive(server)
        os.close(lease)
        lease = -1
        # LINGER_S after the last holder let go of it, it stops, its record gone first.
        deadline = time.monotonic() + LINGER_S + GONE_WITHIN_S
        while alive(server) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not alive(server), "the lingering server did not stop"
        assert not (home / "server" / "temporary.json").exists()
    finally:
        if lease >= 0:
            os.close(lease)
        if alive(server):
            server.kill()


def test_server_down_stops_a_lingering_server_and_nothing_else(tmp_path: Path) -> None:
    from tracerflow.flows.temporary_server import LINGER_RECORD, stop_lingering_server

    sleep = [sys.executable, "-c", "import time; time.sleep(300)"]
    stand_in = subprocess.Popen([*sleep, "-m", "tracerflow.flows.temporary_server"])
    other = subprocess.Popen([*sleep, "some", "other", "program"])
    folder = tmp_path / "server"
    folder.mkdir()
    try:
        (folder / LINGER_RECORD).write_text(json.dumps({"pid": other.pid, "url": "x"}))
        assert not stop_lingering_server(folder)  # a pid now another program's is left alone
        assert other.poll() is None
        (folder / LINGER_RECORD).write_text(json.dumps({"pid": stand_in.pid, "url": "x"}))
        assert stop_lingering_server(folder)
        assert stand_in.wait(timeout=GONE_WITHIN_S) == -signal.SIGTERM
        assert not (folder / LINGER_RECORD).exists()
    finally:
        for each in (stand_in, other):
            each.kill()
            each.wait()
