"""``tracerflow store copy`` (move a score history between stores) and ``tracerflow store
snapshots`` (a lake's snapshots, for ``history --as-of``)."""

from __future__ import annotations

from typing import Annotated

import typer

from tracerflow.cli.db_option import StoreOption, score_store
from tracerflow.cli.render import OutputFormat, emit, rows_text

store_app = typer.Typer(
    help="Where the score history lives: copy it between stores, list a lake's snapshots.",
    no_args_is_help=True,
)


@store_app.command()
def copy(
    source: Annotated[
        str,
        typer.Option(
            "--from", help="The store to copy: a .duckdb file or ducklake:postgres:<conninfo>."
        ),
    ],
    target: Annotated[
        str,
        typer.Option("--to", help="The store to copy into (created when new)."),
    ],
) -> None:
    """Copy every run the target lacks, then check that no row and no value was lost.

    A new lake takes its data folder from $TRACERFLOW_LAKE_DATA_PATH. A second copy adds
    nothing.
    """
    from tracerflow.storage.copy import copy_history

    source_store, target_store = score_store(source), score_store(target)
    report = copy_history(source_store, target_store)
    columns = ("table", "source_rows", "added", "target_rows", "columns_checked", "checksums")
    rows = [
        [r.table, r.source_rows, r.added, r.target_rows, r.columns_checked, "equal"] for r in report
    ]
    typer.echo(f"copied {source_store.describe()} -> {target_store.describe()}")
    typer.echo(rows_text(columns, rows, "table"))


@store_app.command()
def snapshots(
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    store: StoreOption = None,
) -> None:
    """A lake's snapshots, newest first: the ids and times `history --as-of` reads at."""
    from tracerflow.storage.database import lake_snapshots

    rows = lake_snapshots(score_store(store))
    columns = ("snapshot_id", "snapshot_time", "changes")
    emit(rows_text(columns, [[r[c] for c in columns] for r in rows], output_format.value))
