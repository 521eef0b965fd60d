"""``tracerflow store copy`` (move a score history between stores), ``tracerflow store
snapshots`` (a lake's snapshots, for ``history --as-of``) and ``tracerflow store maintain``
(flush, merge, expire: docs/operations.md)."""

from __future__ import annotations

from typing import Annotated

import typer

from tracerflow.cli.db_option import StoreOption, score_store
from tracerflow.cli.render import OutputFormat, emit, rows_text
from tracerflow.storage.maintenance import DEFAULT_KEEP_DAYS

store_app = typer.Typer(
    help="Where the score history lives: copy it between stores, list a lake's snapshots, "
    "maintain it.",
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


@store_app.command()
def maintain(
    keep_days: Annotated[
        float,
        typer.Option(
            min=0,
            help="Expire a lake's snapshots older than this many days (but the newest, and those "
            "that recorded a run unless --force).",
        ),
    ] = DEFAULT_KEEP_DAYS,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Expire old snapshots that recorded a run too: `history --as-of` can no longer "
            "read the history as it was then.",
        ),
    ] = False,
    store: StoreOption = None,
) -> None:
    """Flush a lake's inlined rows to Parquet, merge small files, expire old snapshots and
    delete the files none reads; on the embedded file, a CHECKPOINT."""
    from tracerflow.storage.maintenance import maintain as maintain_store

    report = maintain_store(score_store(store), keep_days=keep_days, force=force)
    for line in report.lines(keep_days):
        typer.echo(line)
