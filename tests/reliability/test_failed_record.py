"""When a run's one write to the score database fails, the command says so last, and a re-run
records it."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.reliability.harness import run_cli

PROMPT = "Mary and John went to the store, Jon gave a drink to"


def test_a_run_that_cannot_be_recorded_says_so_last(prefect_api: None, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    damaged = b"this is not a DuckDB file" * 1000
    (home / "scores.duckdb").write_bytes(damaged)

    result = run_cli(["--preset", "toy-clt", "--prompt", PROMPT], home)

    assert result.returncode == 1, result.stdout + result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: the run was not recorded: cannot open the score database {home}"
    )
    assert last.endswith("; a re-run will record it (its finished stages are cached)")
    table = [line for line in result.stdout.splitlines() if line.startswith("toy-clt ")]
    assert len(table) == 1 and table[0].rstrip().endswith("ok")  # the scores it computed
    assert (home / "scores.duckdb").read_bytes() == damaged

    (home / "scores.duckdb").unlink()  # the user moves the damaged file away
    again = run_cli(["--preset", "toy-clt", "--prompt", PROMPT], home)

    assert again.returncode == 0, again.stdout + again.stderr
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        assert con.execute("SELECT status FROM scores").fetchall() == [("ok",)]
