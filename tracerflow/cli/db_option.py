"""``--db``, the score database option of every command that reads scores."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracerflow.settings import get_settings

DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Score database [default: $TRACERFLOW_HOME/scores.duckdb]."),
]


def database_path(db: Path | None) -> Path:
    """The database ``--db`` names, else the one under ``$TRACERFLOW_HOME``."""
    return db if db is not None else get_settings().database_path
