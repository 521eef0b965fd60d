"""``tracerflow store maintain``: keep a lake small and quick to read.

On a lake, in this order (DuckLake's own functions, each step its own commit, retried while it
conflicts with a concurrent writer):

1. flush inlined rows (small commits DuckLake kept in the catalog) into Parquet files;
2. merge small adjacent Parquet files of each table;
3. expire the snapshots older than ``keep_days``, except the newest and, without ``force``,
   those that recorded a run (``history --as-of`` of that run reads it: ``snapshots``);
4. delete the data files no kept snapshot reads any more.

Flushing and merging change no row a query reads. Only one maintenance runs at a time on a lake
(a PostgreSQL advisory lock of its own, ``pglock.MAINTENANCE_LOCK_KEY``). On the embedded file
there are no snapshots or inlined rows: maintenance is a CHECKPOINT (the write-ahead log folded
into the file), under the file's writer lock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb

from tracerflow.errors import ConfigError
from tracerflow.storage import lake
from tracerflow.storage.database import open_database
from tracerflow.storage.pglock import MAINTENANCE_LOCK_KEY
from tracerflow.storage.snapshots import lake_snapshots, run_snapshots, table_id
from tracerflow.storage.store import FileStore, LakeStore, NoHistoryError, Store

Connection = duckdb.DuckDBPyConnection

DEFAULT_KEEP_DAYS = 30.0
STEP_TIMEOUT_S = 300.0  # how long one step retries while it conflicts with writers
LOCK_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance did; ``lines`` says it to a person."""

    store: str
    flushed_rows: int = 0
    merged_files: int = 0  # small files merged ...
    merged_into: int = 0  # ... into this many
    data_files_before: int = 0
    data_files_after: int = 0
    expired: list[int] = field(default_factory=list)
    kept_for_runs: list[int] = field(default_factory=list)  # older than keep_days, kept
    deleted_files: int = 0
    checkpointed: bool = False

    def lines(self, keep_days: float) -> list[str]:
        if self.checkpointed:
            return [
                f"{self.store}: the embedded file keeps no snapshots and no inlined rows; "
                "checkpointed it (its write-ahead log folded into the file)"
            ]
        kept = (
            f"; kept {len(self.kept_for_runs)} older ones that recorded a run ("
            f"{_ids(self.kept_for_runs)}: `history --as-of` reads them; --force expires them)"
            if self.kept_for_runs
            else ""
        )
        return [
            f"maintained {self.store}",
            f"flushed {self.flushed_rows} inlined rows into Parquet files",
            f"merged {self.merged_files} small data files into {self.merged_into}",
            f"expired {len(self.expired)} snapshots older than {keep_days:g} days"
            + (f" ({_ids(self.expired)})" if self.expired else "")
            + kept,
            f"deleted {self.deleted_files} data files no kept snapshot reads; the lake's "
            f"tables now read {self.data_files_after} files ({self.data_files_before} before)",
        ]


def _ids(ids: list[int]) -> str:
    shown = ", ".join(map(str, ids[:10]))
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > 10 else "")


def maintain(
    store: Store,
    keep_days: float = DEFAULT_KEEP_DAYS,
    force: bool = False,
    now: datetime | None = None,
) -> MaintenanceReport:
    """Maintain ``store`` (see the module's docstring); ``now`` (UTC) is for tests."""
    if not keep_days >= 0:
        raise ConfigError(f"--keep-days {keep_days} must be a number of days, 0 or more")
    if isinstance(store, FileStore):
        if not store.path.is_file():
            raise NoHistoryError(f"no score database at {store.path}: nothing to maintain")
        con = open_database(store)  # migrations, if any, under the writer lock
        try:
            con.execute("CHECKPOINT")
        finally:
            con.close()
        return MaintenanceReport(store.describe(), checkpointed=True)
    cutoff = (now or datetime.now(UTC).replace(tzinfo=None)) - timedelta(days=keep_days)
    with lake.catalog_lock_for(store, MAINTENANCE_LOCK_KEY, LOCK_TIMEOUT_S, "maintaining it"):
        con = lake.open_writer(store)
        try:
            return _maintain_lake(con, store, cutoff, force)
        except duckdb.Error as error:
            raise lake.lake_error(store, error, read_only=False) from None
        finally:
            con.close()


def _maintain_lake(
    con: Connection, store: LakeStore, cutoff: datetime, force: bool
) -> MaintenanceReport:
    files_before = _data_files(con)
    flushed = _step(con, f"CALL ducklake_flush_inlined_data('{lake.CATALOG}')")
    flushed_rows = sum(int(row[-1] or 0) for row in flushed)
    # One row per table merged: schema, table, files merged, files written.
    merged = _step(con, f"CALL ducklake_merge_adjacent_files('{lake.CATALOG}')")
    snapshots = lake_snapshots(con)
    newest = snapshots[-1].snapshot_id
    old = [s.snapshot_id for s in snapshots if s.time < cutoff and s.snapshot_id != newest]
    needed = run_snapshots(snapshots, table_id(con, "runs")) if not force else set()
    expired = [snapshot_id for snapshot_id in old if snapshot_id not in needed]
    if expired:
        versions = ", ".join(map(str, expired))
        _step(con, f"CALL ducklake_expire_snapshots('{lake.CATALOG}', versions => [{versions}])")
    deleted = _step(con, f"CALL ducklake_cleanup_old_files('{lake.CATALOG}', cleanup_all => true)")
    return MaintenanceReport(
        store.describe(),
        flushed_rows=flushed_rows,
        merged_files=sum(int(row[-2]) for row in merged),
        merged_into=sum(int(row[-1]) for row in merged),
        data_files_before=files_before,
        data_files_after=_data_files(con),
        expired=expired,
        kept_for_runs=[snapshot_id for snapshot_id in old if snapshot_id in needed],
        deleted_files=len(deleted),
    )


def _step(con: Connection, statement: str) -> list[tuple[object, ...]]:
    """One maintenance call in a transaction of its own, retried while it conflicts."""
    result = lake._in_transaction(
        con, lambda c: c.execute(statement).fetchall(), timeout_s=STEP_TIMEOUT_S
    )
    return result or []


def _data_files(con: Connection) -> int:
    (count,) = con.execute(  # type: ignore[misc]
        f"SELECT coalesce(sum(file_count), 0) FROM ducklake_table_info('{lake.CATALOG}')"
    ).fetchone()
    return int(count)
