"""``tracerflow sql``: one read-only query over the score database, printed or written to an
``--out`` file that can never be the database itself."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from tracerflow.cli.db_option import StoreOption, score_store
from tracerflow.cli.render import check_out_path, emit, rows_text, write_atomically
from tracerflow.errors import StorageError
from tracerflow.storage.queries import run_sql


class SqlFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


def sql_command(
    query: Annotated[
        str, typer.Argument(help='One read query, e.g. "SELECT * FROM latest_scores".')
    ],
    output_format: Annotated[SqlFormat, typer.Option("--format")] = SqlFormat.table,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the result to this file (never the database, never a folder)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --out replace a file.")] = False,
    store: StoreOption = None,
) -> None:
    """Run a read-only SQL query over the score database (see docs/database.md)."""
    if out is not None:
        check_out_path(out, score_store(store), force)
    columns, rows = run_sql(score_store(store), query)
    if output_format is SqlFormat.parquet:
        _write_parquet(columns, rows, out)
        return
    emit(rows_text(columns, rows, output_format.value), out)


def _write_parquet(columns: list[str], rows: list[tuple[Any, ...]], out: Path | None) -> None:
    if out is None:
        raise StorageError("--format parquet writes a file: add --out FILE.parquet")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise StorageError("--format parquet needs pyarrow: pip install pyarrow") from error
    table = pa.table({c: [row[i] for row in rows] for i, c in enumerate(columns)})
    write_atomically(out, lambda temp: pq.write_table(table, temp))
    typer.echo(f"wrote {len(rows)} rows to {out}", err=True)
