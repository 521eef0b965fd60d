"""Fixtures: real DuckDB files, written by the real writer."""

from __future__ import annotations

from pathlib import Path

import pytest

from .builders import populate


@pytest.fixture(scope="session")
def populated_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five nights of IOI history plus a smoke run. Read-only for the tests that use it."""
    db_path = tmp_path_factory.mktemp("populated") / "scores.duckdb"
    populate(db_path)
    return db_path


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where a test that writes keeps its own database."""
    return tmp_path / "scores.duckdb"
