"""One real Prefect API server for the whole session, and a fresh TRACERFLOW_HOME per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """Prefect's test harness: a temporary database and API server, started once (~12 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("TRACERFLOW_HOME", str(home))
    return home
