"""``--store`` (also spelled ``--db``), the score store option of every command that reads
scores."""

from __future__ import annotations

from typing import Annotated

import typer

from tracerflow.settings import get_settings
from tracerflow.storage.store import Store, parse_store

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        "--db",
        # Parentheses, not brackets: rich help reads [...] as markup and drops it.
        help="Score store: a .duckdb file or ducklake:postgres:<libpq conninfo> "
        "(default: $TRACERFLOW_STORE, else $TRACERFLOW_HOME/scores.duckdb).",
        metavar="TEXT",
    ),
]


def score_store(value: str | None) -> Store:
    """The store ``--store`` names, else the configured one (``$TRACERFLOW_STORE`` or the file
    under ``$TRACERFLOW_HOME``)."""
    settings = get_settings()
    if value is None:
        return settings.score_store
    return parse_store(value, settings.lake_data_path)
