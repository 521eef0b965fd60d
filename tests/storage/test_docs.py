"""The example queries of docs/database.md run, as written, against a populated database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tracerflow.storage import run_sql

DATABASE_DOC = Path(__file__).resolve().parents[2] / "docs" / "database.md"


def example_queries() -> list[tuple[str, str]]:
    """(question, sql) for each ```sql block under "## Example queries"."""
    examples = DATABASE_DOC.read_text().split("## Example queries", 1)[1]
    return re.findall(r"^### (.+?)\n.*?```sql\n(.*?)```", examples, flags=re.S | re.M)


def test_the_doc_answers_the_questions_the_issue_asks() -> None:
    questions = [question for question, _ in example_queries()]

    assert len(questions) >= 5
    assert any("beat the old one on the IOI suite" in q for q in questions)
    assert any("last 30 nightly runs" in q for q in questions)
    assert any("worst explained" in q for q in questions)


@pytest.mark.parametrize(
    ("question", "sql"), example_queries(), ids=[q for q, _ in example_queries()]
)
def test_each_documented_query_runs_and_answers(
    populated_db: Path, question: str, sql: str
) -> None:
    columns, rows = run_sql(populated_db, sql)

    assert columns
    assert rows, f"{question!r} returned no rows on a populated database"
