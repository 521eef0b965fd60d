"""A scoring run that records into a DuckLake (TRACERFLOW_STORE), read back by the commands."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracerflow.flows.score import score_flow
from tracerflow.settings import get_settings
from tracerflow.storage import queries


def tracerflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def test_a_run_records_into_the_lake_the_setting_names_and_the_commands_read_it(
    home: Path, fresh_pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"ducklake:postgres:{fresh_pg_database}"
    monkeypatch.setenv("TRACERFLOW_STORE", url)
    monkeypatch.setenv("TRACERFLOW_LAKE_DATA_PATH", str(tmp_path / "lake-data"))

    state = score_flow(["toy-clt"], ["The cat sat on the"], return_state=True)

    assert state.is_completed()
    flow_run_id = str(state.state_details.flow_run_id)
    recorded = queries.scores_of_run(get_settings().score_store, flow_run_id)
    assert [(row["transcoder"], row["status"]) for row in recorded] == [("toy-clt", "ok")]
    assert not get_settings().database_path.exists()  # nothing went to the embedded file

    history = tracerflow("history", "--format", "csv")
    assert history.returncode == 0, history.stderr
    assert flow_run_id in history.stdout and "The cat sat on the" in history.stdout
    snapshots = tracerflow("store", "snapshots")
    assert snapshots.returncode == 0 and "tables_created" in snapshots.stdout

    # The file route and the lake route give one history: copy the lake into a file.
    copied = tracerflow("store", "copy", "--from", url, "--to", str(tmp_path / "copy.duckdb"))
    assert copied.returncode == 0, copied.stderr
    assert queries.scores_of_run(tmp_path / "copy.duckdb", flow_run_id) == recorded


def test_store_commands_fail_in_one_line_with_exit_2_on_bad_stores(tmp_path: Path) -> None:
    for args, expected in (
        (("history", "--store", "ducklake:sqlite:x.db"), "only DuckLake catalogs in PostgreSQL"),
        (("history", "--store", "postgresql://u:pw@h/db"), "neither a path to a .duckdb file"),
        (("history", "--as-of", "yesterday"), "neither a snapshot id"),
        (("store", "snapshots", "--store", str(tmp_path / "x.duckdb")), "keeps no snapshots"),
        (("store", "copy", "--from", str(tmp_path / "none.duckdb"), "--to", "x.duckdb"),
         "no score database at"),
    ):  # fmt: skip
        result = tracerflow(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert "pw@" not in result.stderr
