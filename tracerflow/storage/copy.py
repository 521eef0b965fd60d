"""``tracerflow store copy``: move a score history from one store to another (the embedded file
into a team's lake, a lake back into a file, a file into a backup file).

One transaction adds every row of the source that the target lacks, table by table, matched by
its id; rows the target holds already are left as they are, so a second copy adds nothing. Then,
in a fresh read of both, every source row must be in the target with the same values: equal row
counts and, per column, an equal order-independent checksum (the sum of the values' hashes).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb

from tracerflow.errors import StorageError
from tracerflow.storage import lake
from tracerflow.storage.database import open_reader, write_file
from tracerflow.storage.store import LakeStore, Store, StoreLike, parse_store

Connection = duckdb.DuckDBPyConnection

# Every table of the history and the column that identifies its rows, parents before children.
TABLES = (
    ("transcoders", "transcoder_id"),
    ("models", "model_id"),
    ("prompts", "prompt_id"),
    ("runs", "flow_run_id"),
    ("scores", "score_id"),
    ("transcoder_metrics", "metrics_id"),
    ("subgraphs", "subgraph_id"),
)
SOURCE, TARGET = "copy_source", "copy_target"


@dataclass(frozen=True)
class TableCopy:
    table: str
    source_rows: int
    added: int
    target_rows: int  # the target's rows whose ids the source holds, after the copy
    columns_checked: int
    columns_differing: tuple[str, ...]  # columns whose checksums differ (empty: all equal)


def copy_history(source: StoreLike, target: StoreLike, timeout_s: float = 600.0) -> list[TableCopy]:
    """Copy every row of ``source`` that ``target`` lacks, then check nothing was lost.

    Raises:
        StorageError: the stores are the same, the source holds no history, either cannot be
            opened, or the check finds a row count or column checksum that differs.
    """
    source, target = parse_store(source), parse_store(target)
    if source == target:
        raise StorageError(f"--from and --to are the same store ({source.describe()})")
    open_reader(source).close()  # no history: a clear error; an old file: migrated first

    def attach_source(con: Connection) -> None:
        _attach(con, source, SOURCE)

    def add_missing(con: Connection) -> dict[str, int]:
        added = {}
        for table, key in TABLES:
            before = _count(con, table)
            con.execute(
                f"INSERT INTO {table} BY NAME SELECT * FROM {SOURCE}.{table} s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE t.{key} = s.{key})"
            )
            added[table] = _count(con, table) - before
        return added

    if isinstance(target, LakeStore):
        added = lake.write(target, add_missing, timeout_s, prepare=attach_source)
    else:
        added = write_file(target, add_missing, timeout_s=timeout_s, prepare=attach_source)
    with _both(source, target) as con:
        report = [_check(con, table, key, added[table]) for table, key in TABLES]
    lost = [r for r in report if r.target_rows != r.source_rows or r.columns_differing]
    if lost:
        details = "; ".join(
            f"{r.table}: {r.source_rows} source rows, {r.target_rows} in the target"
            + (
                f", columns differing: {', '.join(r.columns_differing)}"
                if r.columns_differing
                else ""
            )
            for r in lost
        )
        raise StorageError(
            f"the copy from {source.describe()} to {target.describe()} does not match: {details}"
        )
    return report


def _count(con: Connection, table: str) -> int:
    row = con.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def _attach(con: Connection, store: Store, alias: str) -> None:
    if isinstance(store, LakeStore):
        lake.attach(con, store, alias, read_only=True)
        return
    path = str(store.path).replace("'", "''")
    try:
        con.execute(f"ATTACH '{path}' AS {alias} (READ_ONLY)")
    except duckdb.Error as error:
        raise StorageError(f"cannot open {store.path} to copy it: {error}") from error


@contextlib.contextmanager
def _both(source: Store, target: Store) -> Iterator[Connection]:
    con = lake.new_connection()
    try:
        _attach(con, source, SOURCE)
        _attach(con, target, TARGET)
        yield con
    finally:
        con.close()


def _check(con: Connection, table: str, key: str, added: int) -> TableCopy:
    """Row count and per-column checksums of the source table against the target rows with the
    same ids, read back after the copy committed."""
    columns = [
        name
        for (name,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE database_name = ? "
            "AND schema_name = 'main' AND table_name = ? ORDER BY column_index",
            [SOURCE, table],
        ).fetchall()
    ]
    sums = ", ".join(f"sum(hash({c})::HUGEINT)" for c in columns)
    source_row = con.execute(f"SELECT count(*), {sums} FROM {SOURCE}.{table}").fetchone()
    target_row = con.execute(
        f"SELECT count(*), {sums} FROM {TARGET}.{table} "
        f"WHERE {key} IN (SELECT {key} FROM {SOURCE}.{table})"
    ).fetchone()
    assert source_row is not None and target_row is not None
    differing = tuple(
        column
        for column, a, b in zip(columns, source_row[1:], target_row[1:], strict=True)
        if a != b
    )
    return TableCopy(
        table=table,
        source_rows=int(source_row[0]),
        added=added,
        target_rows=int(target_row[0]),
        columns_checked=len(columns),
        columns_differing=differing,
    )
