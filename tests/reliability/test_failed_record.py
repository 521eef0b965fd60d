"""When a run's one write to the score database fails, the command says so last, with the scores
it computed, and a re-run records it. A store that is damaged before the run starts is refused
at the door instead (exit 2, nothing computed)."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.harness import run_cli

PROMPT = "Mary and John went to the store, Jon gave a drink to"


def test_a_damaged_store_is_refused_before_the_run_and_left_as_it_was(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    damaged = b"this is not a DuckDB file" * 1000
    (home / "scores.duckdb").write_bytes(damaged)

    result = run_cli(["--preset", "toy-clt", "--prompt", PROMPT], home)

    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip() == (
        f"error: the score store {home / 'scores.duckdb'} is not a readable DuckDB database: "
        f'IO Error: The file "{home / "scores.duckdb"}" exists, but it is not a valid DuckDB '
        "database file!"
    )
    assert (home / "scores.duckdb").read_bytes() == damaged
    assert not (home / "artifacts").exists()  # nothing was computed
