"""A run whose every item failed is a failed run, not a partial one."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.fake_hub import fake_hub, hub_env
from tests.reliability.harness import run_cli

PROMPT = "Mary and John went to the store, Jon gave a drink to"


def test_a_run_whose_every_item_failed_is_labelled_failed(
    prefect_api: None, tmp_path: Path
) -> None:
    home = tmp_path / "home"

    # Online, whether a Hub repo exists is the download's question: the run starts (on the toy
    # model) and its one item fails at the download, where the (fake) Hub says it does not exist.
    arguments = ["--transcoder", "nobody/no-such-clt", "--model", "toy-gpt2", "--prompt", PROMPT]
    with fake_hub() as hub:
        result = run_cli(arguments, home, env=hub_env(hub.url, tmp_path / "hf"))

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

    from tracerflow.flows.records import run_status as status_of

    assert status_of([SimpleNamespace(status=s) for s in statuses]) == run_status  # type: ignore[misc]
