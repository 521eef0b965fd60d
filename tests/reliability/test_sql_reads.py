"""`tracerflow sql` runs every read DuckDB has, `PIVOT` and `UNPIVOT` included, and still refuses
every write, however it is dressed.

DuckDB parses a `PIVOT` whose columns come from the data into `CREATE TYPE` statements (temporary
enums of those values) and then its `SELECT`, so counting parsed statements refused it as "2
statements"; statements are counted on the text, and a write wrapped around a `PIVOT` or put
after it is refused before it runs. Real DuckDB files written by the real writer; the real
`tracerflow` app.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.storage.builders import populate
from tracerflow.cli import app
from tracerflow.errors import StorageError
from tracerflow.storage.queries import run_sql


@pytest.fixture(scope="module")
def score_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db_path = tmp_path_factory.mktemp("home") / "scores.duckdb"
    populate(db_path, nights=1)
    return db_path


def test_the_pivot_of_the_issue_prints_its_table(score_db: Path) -> None:
    query = "PIVOT (select 'a' as k, 1 as v) ON k USING sum(v)"  # was "got 2 statements"

    result = CliRunner().invoke(app, ["sql", query, "--format", "csv", "--db", str(score_db)])

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["a", "1"]


READS = {
    "PIVOT on a column's values": (
        "PIVOT (SELECT transcoder_kind, status FROM scores_wide) ON status USING count(*) "
        "GROUP BY transcoder_kind ORDER BY 1",
        (["transcoder_kind", "ok"], [("clt", 9), ("plt", 4)]),
    ),
    "PIVOT on two columns": (
        "PIVOT (SELECT status, transcoder_kind FROM scores_wide) ON status, transcoder_kind "
        "USING count(*)",
        (["ok_clt", "ok_plt"], [(9, 4)]),
    ),
    "PIVOT in a CTE": (
        "WITH p AS (PIVOT (SELECT transcoder_kind FROM scores_wide) ON transcoder_kind "
        "USING count(*)) SELECT clt + plt AS scores FROM p",
        (["scores"], [(13,)]),
    ),
    "UNPIVOT": (
        "UNPIVOT (SELECT 1 AS a, 2 AS b) ON a, b INTO NAME k VALUE v",
        (["k", "v"], [("a", 1), ("b", 2)]),
    ),
    "a semicolon in a string": ("SELECT ';' AS s", (["s"], [(";",)])),
}


@pytest.mark.parametrize("case", list(READS))
def test_a_read_runs(score_db: Path, case: str) -> None:
    query, expected = READS[case]

    assert run_sql(score_db, query) == expected


# Each was refused before, and must stay refused: a write after a PIVOT, around one, or beside a
# statement that hides the separator in a comment.
WRITES = {
    "DROP after a PIVOT": (
        "PIVOT scores_wide ON status USING count(*); DROP TABLE scores",
        "exactly one SQL statement, got 2",
    ),
    "a PIVOT after a SELECT": (
        "SELECT 1; PIVOT scores_wide ON status USING count(*)",
        "exactly one SQL statement, got 2",
    ),
    "CREATE TYPE after a PIVOT": (
        "PIVOT scores_wide ON status USING count(*);; CREATE TYPE e AS ENUM ('x')",
        "exactly one SQL statement, got 2",
    ),
    "DROP after a comment": ("SELECT 1 -- ;\n; DROP TABLE scores", "got 2"),
    "CREATE TABLE AS PIVOT": (
        "CREATE TABLE pivoted AS PIVOT scores_wide ON status USING count(*)",
        "CREATE statements are refused",
    ),
    "INSERT of a PIVOT": (
        "INSERT INTO runs PIVOT scores_wide ON status USING count(*)",
        "INSERT statements are refused",
    ),
    "UPDATE from a PIVOT": (
        "UPDATE scores SET n_pos = (PIVOT scores_wide ON status USING count(*))",
        "UPDATE statements are refused",
    ),
    "COPY of a PIVOT": (
        "COPY (PIVOT scores_wide ON status USING count(*)) TO '{dir}/leak.csv'",
        "COPY statements are refused",
    ),
    "CREATE TYPE alone": ("CREATE TYPE e AS ENUM ('x')", "CREATE statements are refused"),
}


@pytest.mark.parametrize("case", list(WRITES))
def test_a_write_dressed_with_a_pivot_is_refused_and_changes_nothing(
    score_db: Path, case: str, tmp_path: Path
) -> None:
    statement, message = WRITES[case]
    before = hashlib.sha256(score_db.read_bytes()).hexdigest()

    with pytest.raises(StorageError, match=message):
        run_sql(score_db, statement.format(dir=tmp_path))

    assert hashlib.sha256(score_db.read_bytes()).hexdigest() == before
    assert list(tmp_path.iterdir()) == []
