"""Run the viewer with a stand-in for ``tracerflow.storage.queries.graph_index``.

The storage package (DuckDB writer and queries) is being built alongside the viewer; until it
lands, this stand-in reads a ``graph_index`` table from a real DuckDB file that the test writes
with the documented columns. Once storage is merged, write the database with storage's own
writer and drop this module.

Usage: ``python -m tests.viewer.fake_storage view --db scores.duckdb ...``
"""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

GRAPH_INDEX_COLUMNS = (
    "slug",
    "transcoder",
    "model",
    "prompt",
    "replacement_score",
    "completeness_score",
    "pruned_replacement_score",
    "pruned_completeness_score",
    "recorded_at",
)


def write_scores_db(db_path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (dicts with ``GRAPH_INDEX_COLUMNS``) to a ``graph_index`` table."""
    import duckdb

    with duckdb.connect(str(db_path)) as con:
        con.execute(
            "create table graph_index (slug varchar, transcoder varchar, model varchar, "
            "prompt varchar, replacement_score double, completeness_score double, "
            "pruned_replacement_score double, pruned_completeness_score double, "
            "recorded_at timestamptz)"
        )
        con.executemany(
            "insert into graph_index values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [[row[column] for column in GRAPH_INDEX_COLUMNS] for row in rows],
        )


def graph_index(db_path: Path) -> list[dict[str, Any]]:
    """The stand-in: every row of the ``graph_index`` table, as dicts."""
    import duckdb

    with duckdb.connect(str(db_path), read_only=True) as con:
        rows = con.execute(f"select {', '.join(GRAPH_INDEX_COLUMNS)} from graph_index").fetchall()
    return [dict(zip(GRAPH_INDEX_COLUMNS, row, strict=True)) for row in rows]


def install() -> None:
    """Make ``from tracerflow.storage.queries import graph_index`` find the stand-in."""
    queries = types.ModuleType("tracerflow.storage.queries")
    queries.graph_index = graph_index  # type: ignore[attr-defined]
    storage = sys.modules.get("tracerflow.storage") or types.ModuleType("tracerflow.storage")
    storage.queries = queries  # type: ignore[attr-defined]
    sys.modules["tracerflow.storage"] = storage
    sys.modules["tracerflow.storage.queries"] = queries


if __name__ == "__main__":
    install()
    from tracerflow.viewer.__main__ import app

    app(prog_name="tracerflow")
