"""A lake's snapshots as ``history --as-of`` needs them: which ones recorded a run (maintenance
keeps those), and the one line that says a read is past what maintenance kept.

Every run is recorded in one transaction, so one snapshot holds each run's commit: the history
as it was when that run was recorded. A snapshot that recorded no run (a flush of inlined rows,
a merge of files, a migration) changed no row a query reads, so expiring it changes no answer of
``--as-of``: a time in its span reads the run snapshot before it, which holds the same rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb

from tracerflow.errors import StorageError
from tracerflow.storage import lake
from tracerflow.storage.records import to_utc_naive
from tracerflow.storage.store import AsOf, LakeStore

Connection = duckdb.DuckDBPyConnection

# The kinds of change in ``ducklake_snapshots().changes`` that insert rows into a table (by id).
INSERT_CHANGES = ("tables_inserted_into", "inlined_insert")


@dataclass(frozen=True)
class Snapshot:
    snapshot_id: int
    time: datetime  # UTC, naive
    inserted_table_ids: frozenset[int]


def lake_snapshots(con: Connection, catalog: str = lake.CATALOG) -> list[Snapshot]:
    """Every snapshot the lake keeps, oldest first, with the tables each inserted rows into."""
    rows = con.execute(
        f"SELECT snapshot_id, snapshot_time, changes FROM ducklake_snapshots('{catalog}') "
        "ORDER BY snapshot_id"
    ).fetchall()
    return [
        Snapshot(
            int(snapshot_id),
            to_utc_naive(time),
            frozenset(
                int(table_id)
                for kind in INSERT_CHANGES
                for table_id in (changes or {}).get(kind, [])
            ),
        )
        for snapshot_id, time, changes in rows
    ]


def table_id(con: Connection, table: str, catalog: str = lake.CATALOG) -> int | None:
    """DuckLake's id of ``table`` (None: no such table)."""
    row = con.execute(
        f"SELECT table_id FROM ducklake_table_info('{catalog}') WHERE table_name = ?", [table]
    ).fetchone()
    return int(row[0]) if row else None


def run_snapshots(snapshots: list[Snapshot], runs_table_id: int | None) -> set[int]:
    """The snapshots that recorded a run (inserted into ``runs``): the ones ``--as-of`` of a
    recorded run reads."""
    if runs_table_id is None:
        return set()
    return {s.snapshot_id for s in snapshots if runs_table_id in s.inserted_table_ids}


def missing_snapshot_error(store: LakeStore, as_of: AsOf) -> StorageError:
    """The one line for an ``--as-of`` the lake has no snapshot for: expired by maintenance, or
    not taken yet, with the snapshots it does keep."""
    with lake.connect(store, read_only=True) as con:
        kept = lake_snapshots(con)
    where = store.describe()
    listing = "`tracerflow store snapshots` lists the kept ones"
    if not kept:
        return StorageError(f"{where} has no snapshot at {as_of.describe()}")
    oldest, newest = kept[0], kept[-1]
    if as_of.snapshot is not None and as_of.snapshot > newest.snapshot_id:
        return StorageError(
            f"{where} has no snapshot {as_of.snapshot}: its newest is {newest.snapshot_id} "
            f"({newest.time:%Y-%m-%d %H:%M:%S} UTC)"
        )
    if as_of.snapshot is not None or oldest.snapshot_id > 0:
        return StorageError(
            f"--as-of {as_of.describe()} is past the expiry of {where}: `tracerflow store "
            f"maintain` expired it; the oldest snapshot kept is {oldest.snapshot_id} "
            f"({oldest.time:%Y-%m-%d %H:%M:%S} UTC); {listing}"
        )
    return StorageError(
        f"{where} did not exist yet at {as_of.describe()}: its first snapshot is "
        f"{oldest.snapshot_id} ({oldest.time:%Y-%m-%d %H:%M:%S} UTC)"
    )


def check_time_kept(store: LakeStore, moment: datetime) -> None:
    """``StorageError`` when a read at ``moment`` falls between two kept snapshots with an
    expired one between them that recorded a run (``--force`` expired it): DuckLake would read
    the older kept one, which may lack that run, and nothing says whether the run was committed
    before ``moment``. A run's rows carry the id of the snapshot that inserted them."""
    with lake.connect(store, read_only=True) as now:
        kept = lake_snapshots(now)
        read = max((s for s in kept if s.time <= moment), key=lambda s: s.snapshot_id, default=None)
        later = [s for s in kept if read is not None and s.snapshot_id > read.snapshot_id]
        if read is None or not later or later[0].snapshot_id == read.snapshot_id + 1:
            return  # no snapshot between the one read and the next kept was expired
        (lost,) = now.execute(  # type: ignore[misc]
            "SELECT count(*) FROM runs WHERE snapshot_id > ? AND snapshot_id < ?",
            [read.snapshot_id, later[0].snapshot_id],
        ).fetchone()
    if lost:
        raise StorageError(
            f"--as-of {moment} UTC is past the expiry of {store.describe()}: the snapshots of "
            f"{lost} run(s) recorded between snapshot {read.snapshot_id} "
            f"({read.time:%Y-%m-%d %H:%M:%S} UTC) and {later[0].snapshot_id} "
            f"({later[0].time:%Y-%m-%d %H:%M:%S} UTC) were expired (`tracerflow store maintain "
            "--force`); read at one of those two"
        )
