"""`run_sql` reads and only reads: every write is refused with a clear error, nothing changes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import pytest

from tracerflow.errors import StorageError
from tracerflow.storage import run_sql
from tracerflow.storage.database import READER_CONFIG, reading

from .builders import record_run, run_info, score, transcoder

WRITES = [
    "DELETE FROM scores",
    "DROP TABLE scores",
    "DROP VIEW latest_scores",
    "INSERT INTO prompts VALUES ('x', 'y', 1)",
    "UPDATE scores SET replacement_score = 1",
    "CREATE TABLE notes (x INTEGER)",
    "CREATE MACRO twice(x) AS 2 * x",
    "ALTER TABLE runs ADD COLUMN x INTEGER",
    "ATTACH '{dir}/other.duckdb' AS other",
    "COPY scores TO '{dir}/leak.csv'",
    "COPY (SELECT * FROM scores) TO '{dir}/leak.parquet' (FORMAT parquet)",
    "EXPORT DATABASE '{dir}/export'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "PRAGMA enable_profiling",
    "SET threads = 1",
    "CHECKPOINT",
    "CALL pragma_version()",
    "SELECT 1; DROP TABLE scores",
    "DETACH scores",
    "USE memory",
]


@pytest.fixture
def small_db(db_path: Path) -> Path:
    record_run(db_path, run_info("run-1"), [score(transcoder(), "Mary and John", 0.7, 0.9)])
    return db_path


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_select_returns_columns_and_rows(small_db: Path) -> None:
    columns, rows = run_sql(small_db, "SELECT prompt, replacement_score FROM latest_scores")

    assert columns == ["prompt", "replacement_score"]
    assert rows == [("Mary and John", 0.7)]


@pytest.mark.parametrize("statement", WRITES)
def test_a_write_statement_is_refused_and_changes_nothing(
    small_db: Path, statement: str, tmp_path: Path
) -> None:
    before = file_digest(small_db)
    files_before = sorted(tmp_path.rglob("*"))

    with pytest.raises(StorageError, match=r"only reads|exactly one SQL statement"):
        run_sql(small_db, statement.format(dir=tmp_path))

    assert file_digest(small_db) == before
    assert sorted(tmp_path.rglob("*")) == files_before


def test_sql_that_does_not_parse_is_reported_as_such(small_db: Path) -> None:
    with pytest.raises(StorageError, match="does not parse"):
        run_sql(small_db, "SELEC nothing")


def test_behind_the_statement_check_the_reader_cannot_write_files(
    small_db: Path, tmp_path: Path
) -> None:
    # The second wall, on its own: the reader connection refuses file access and settings.
    with reading(small_db) as con:
        for statement in (f"COPY scores TO '{tmp_path}/leak.csv'", "SET threads = 1"):
            with pytest.raises(duckdb.Error):
                con.execute(statement)
        with pytest.raises(duckdb.Error):
            con.execute(f"SELECT * FROM read_csv('{small_db}.lock')")

    assert not (tmp_path / "leak.csv").exists()
    assert READER_CONFIG["enable_external_access"] is False
