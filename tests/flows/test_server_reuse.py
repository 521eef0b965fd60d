"""A run reuses the home's running `tracerflow server up` server instead of starting its own
(seconds saved), and never a dead one or a pid that is now another program's.

Cheap: the session's Prefect harness is the server that answers, and a stand-in process whose
command line is the one `tracerflow server up` starts (`python -m prefect server start --host H
--port P`) plays the recorded pid; its port is the harness's.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from tracerflow.flows.temporary_server import prefect_api
from tracerflow.server import reusable_api_url, server_dir
from tracerflow.settings import get_settings

SLEEP = "import time; time.sleep(300)"


@flow
def tiny_flow() -> int:
    return 1


def process(*arguments: str) -> subprocess.Popen[bytes]:
    """A process that sleeps, with ``arguments`` on its command line."""
    return subprocess.Popen([sys.executable, "-c", SLEEP, *arguments])


@pytest.fixture
def harness_url(prefect_api: None) -> str:
    """The session harness's base URL (``http://127.0.0.1:PORT``)."""
    return str(PREFECT_API_URL.value()).removesuffix("/api")


@pytest.fixture
def stand_ins() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for each in started:
        each.kill()
        each.wait()


def record_server(home: Path, pid: int, url: str) -> None:
    """What `tracerflow server up` writes for its server."""
    folder = server_dir(get_settings())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.pid").write_text(str(pid))
    (folder / "server.url").write_text(url)


def our_server(url: str) -> list[str]:
    return ["prefect", "server", "start", "--host", "127.0.0.1", "--port", url.rpartition(":")[2]]


def test_a_run_uses_the_homes_running_server(
    home: Path,
    harness_url: str,
    stand_ins: list[subprocess.Popen[bytes]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stand_ins.append(process(*our_server(harness_url)))
    record_server(home, stand_ins[-1].pid, harness_url)
    assert reusable_api_url(get_settings()) == f"{harness_url}/api"

    said: list[str] = []
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert not PREFECT_API_URL.value()  # as a new user's run: no server named
        with prefect_api(say=said.append) as api_url:
            state = tiny_flow(return_state=True)
    assert api_url == f"{harness_url}/api"
    assert said == [f"Prefect server: the running `tracerflow server up` one at {api_url}"]
    # The flow run is on the home's server (a temporary server would have had its own database).
    with get_client(sync_client=True) as client:
        recorded = client.read_flow_run(state.state_details.flow_run_id)
    assert recorded.state is not None and recorded.state.is_completed()


def test_a_dead_server_is_not_used(home: Path, harness_url: str) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass", *our_server(harness_url)])
    gone.wait()
    record_server(home, gone.pid, harness_url)  # the URL answers, but the pid is gone
    assert reusable_api_url(get_settings()) is None


def test_a_pid_now_another_programs_is_not_used(
    home: Path, harness_url: str, stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    stand_ins.append(process("some", "other", "program"))
    record_server(home, stand_ins[-1].pid, harness_url)  # alive, and the URL answers
    assert reusable_api_url(get_settings()) is None
    stand_ins.append(process(*our_server("http://127.0.0.1:1")))  # a server, on another port
    record_server(home, stand_ins[-1].pid, harness_url)
    assert reusable_api_url(get_settings()) is None


def test_a_server_that_does_not_answer_is_not_used(
    home: Path, stand_ins: list[subprocess.Popen[bytes]]
) -> None:
    silent = "http://127.0.0.1:1"  # nothing listens on port 1
    stand_ins.append(process(*our_server(silent)))
    record_server(home, stand_ins[-1].pid, silent)
    assert reusable_api_url(get_settings()) is None


def test_no_recorded_server_is_none(home: Path) -> None:
    assert reusable_api_url(get_settings()) is None
