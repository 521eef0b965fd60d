"""Shared fixtures: everything offline, everything small."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.hub_cache import HubCache
    from tests.postgres import PostgresServer

# Nothing in the test suite may reach the Hub; fail fast instead of retrying for 25 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# pytest-xdist's workers start with COLUMNS=80 and LINES=24 set, which tables fit on a terminal
# read (cli/render.terminal_width): a test that wants a width sets one itself.
os.environ.pop("COLUMNS", None)
os.environ.pop("LINES", None)
# Nothing may write to the user's ~/.tracerflow either: every test run gets its own home.
os.environ["TRACERFLOW_HOME"] = tempfile.mkdtemp(prefix="tracerflow-tests-")
# A run's temporary Prefect server stops with it: a test's run leaves no process behind (the
# tests of lingering servers set their own).
os.environ["TRACERFLOW_SERVER_LINGER_S"] = "0"

from tracerflow.settings import configure_prefect_defaults

# An entry point like the CLI: Prefect's defaults (under that home) before anything imports it.
configure_prefect_defaults()


def under_xdist(config: pytest.Config) -> bool:
    """Whether this process is a pytest-xdist worker (``make test`` runs two)."""
    return hasattr(config, "workerinput")


# Session fixtures too costly to set up on every worker: their tests go to one worker.
SHARED_ON_ONE_WORKER = ("demo_run", "retrained")


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, the controller hands out groups in the order ``pytest_collection_modifyitems``
    gives them (xdist's default reorders them by their number of tests), and names the folder
    the toy's retraining will run in, for its workers (tests/toy/retraining.py)."""
    if under_xdist(config) or not getattr(config.option, "numprocesses", None):
        return
    config.option.loadscopereorder = False
    from tests.toy.retraining import FOLDER_VARIABLE

    os.environ[FOLDER_VARIABLE] = tempfile.mkdtemp(prefix="tracerflow-retrained-")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_node_collection_finished(node: object, ids: list[str]) -> None:
    """On the controller: once a worker has collected a test that needs the toy's retraining,
    start it, so it runs beside the other tests; its tests are handed out last."""
    from tests.toy.retraining import FOLDER_VARIABLE, Retraining

    if _RETRAINING or not any(nodeid.endswith("@retrained") for nodeid in ids):
        return
    retraining = Retraining(Path(os.environ[FOLDER_VARIABLE]))
    _RETRAINING.append((retraining, retraining.start()))


_RETRAINING: list = []  # the controller's retraining, if it started one, and its process


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller ends the retraining if it still runs, and removes its folder."""
    if _RETRAINING:
        from tests.toy.retraining import stop

        stop(*_RETRAINING.pop())


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``--dist loadgroup``, hand out whole modules (a module's fixtures are set up once),
    and keep the tests of each costly session fixture together. Groups with a ``slow`` test go
    first, then the others, each the groups of most tests first, so no worker ends the session
    alone on a long one while the other waits; the toy's retraining tests go last, as the
    retraining runs beside the others from the start (minutes on one core)."""
    if not under_xdist(config):
        return
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        group = next((name for name in SHARED_ON_ONE_WORKER if name in fixtures), None)
        item.add_marker(pytest.mark.xdist_group(group or item.nodeid.split("::")[0]))
    group_of = {item: item.get_closest_marker("xdist_group").args[0] for item in items}
    sizes = Counter(group_of.values())
    slow_groups = {group_of[item] for item in items if item.get_closest_marker("slow")}
    items.sort(
        key=lambda item: (
            "retrained" in getattr(item, "fixturenames", ()),
            group_of[item] not in slow_groups,
            -sizes[group_of[item]],  # as xdist orders them: the most tests first
        )
    )


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A GPT-2-style byte-level BPE tokenizer folder, trained offline in well under a second."""
    from tests.synthetic import build_tokenizer

    return build_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> HubCache:
    """An ``HF_HOME`` whose Hub cache holds the real presets' repos (``gpt2`` and both georglange
    transcoders) at their real depth and width, fewer features, random weights (~5 s, 370 MB)."""
    from tests.hub_cache import build_hub_cache

    return build_hub_cache(tmp_path_factory.mktemp("hf-home"))


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Prefect's test harness: a temporary database and API server, started once (~12 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (~1 s to start), started by the first test
    that asks for it and stopped, its folder removed, at the end."""
    from tests.postgres import PostgresServer

    with PostgresServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _closed_lake_connections() -> Iterator[None]:
    """Each test starts with no shared lake connection (``lake.shared_cursor``): one kept from
    an earlier test would skip the opens a test counts or breaks, and hold PostgreSQL sessions."""
    yield
    if "tracerflow.storage.lake" in sys.modules:
        sys.modules["tracerflow.storage.lake"].forget_all()


@pytest.fixture
def fresh_pg_database(postgres: PostgresServer) -> str:
    """A new, empty database on the session's server for this test; its libpq conninfo."""
    return postgres.create_database(f"test_{uuid.uuid4().hex[:16]}")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TRACERFLOW_HOME", str(home))
    return home


@dataclass(frozen=True)
class DemoRun:
    home: Path  # scores.duckdb and graph-files/ of the demo
    stdout: str  # what `tracerflow demo` printed


@pytest.fixture(scope="session")
def demo_run(prefect_api: None, tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`tracerflow demo`, the real command in a subprocess, once per session (~40 s), reporting
    to the session's Prefect harness: the toy CLT and PLT on the built-in prompts."""
    from prefect.settings import PREFECT_API_URL

    home = tmp_path_factory.mktemp("demo") / "home"
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "TRACERFLOW_HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    result = subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return DemoRun(home=home, stdout=result.stdout)


@pytest.fixture(scope="session")
def demo_home(demo_run: DemoRun) -> Path:
    return demo_run.home
