"""A run whose every item failed is a failed run, not a partial one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

PROMPT = "Mary and John went to the store, Jon gave a drink to"


def run_cli(arguments: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TRACERFLOW_HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "run", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_a_run_whose_every_item_failed_is_labelled_failed(
    prefect_api: None, tmp_path: Path
) -> None:
    home = tmp_path / "home"

    result = run_cli(["--transcoder", "nobody/no-such-clt", "--prompt", PROMPT], home)

    assert result.returncode == 1
    assert "1 of 1 items failed" in result.stderr
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        assert con.execute("SELECT status FROM runs").fetchall() == [("failed",)]
        assert con.execute("SELECT status FROM scores").fetchall() == [("failed",)]


@pytest.mark.parametrize(
    ("statuses", "run_status"),
    [(["ok", "ok"], "completed"), (["ok", "failed"], "partial"), (["failed"], "failed")],
)
def test_the_run_status_follows_its_items(statuses: list[str], run_status: str) -> None:
    from types import SimpleNamespace

    from tracerflow.flows.score import run_status as status_of

    assert status_of([SimpleNamespace(status=s) for s in statuses]) == run_status  # type: ignore[misc]
