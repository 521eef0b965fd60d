"""Opening the score store and writing one flow run into it.

The store is the embedded DuckDB file or a DuckLake (``store.py``). For the file: DuckDB lets one
process hold it for writing and refuses every other process meanwhile, so a run writes once, at
its end, in one transaction under a file lock (``scores.duckdb.lock``), and readers open
read-only, locked down, and retry briefly. A lake takes concurrent writers on many hosts
(``lake.py``). The rules: docs/database.md ("Who writes, who reads").
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb
from filelock import FileLock, Timeout

from tracerflow.errors import StorageError, StoreBusyError, StoreUnreachableError
from tracerflow.hashing import canonical_json
from tracerflow.storage import lake, snapshots
from tracerflow.storage.metrics import MetricsRecord, metrics_rows
from tracerflow.storage.migrations import (
    CURRENT_VERSION,
    apply_migrations,
    refuse_foreign,
    schema_version,
)
from tracerflow.storage.paths import set_roots
from tracerflow.storage.records import (
    ModelInfo,
    RunInfo,
    ScoreRecord,
    TranscoderInfo,
    stable_id,
    to_utc_naive,
)
from tracerflow.storage.store import (
    AsOf,
    FileStore,
    LakeStore,
    NoHistoryError,
    Store,
    parse_store,
)

Connection = duckdb.DuckDBPyConnection
T = TypeVar("T")

DEFAULT_WRITE_TIMEOUT_S = 60.0
DEFAULT_READ_TIMEOUT_S = 10.0
# Rows an INSERT statement carries at most (a run of 1 000 prompts is a few statements).
INSERT_BATCH_ROWS = 200

# Readers cannot touch files besides the database, load extensions or change settings, so a
# query typed by a person cannot write anything through `COPY ... TO`, `EXPORT`, or `SET`.
READER_CONFIG = {
    "enable_external_access": False,
    "autoload_known_extensions": False,
    "autoinstall_known_extensions": False,
    "lock_configuration": True,
}


def _is_file_lock_conflict(error: duckdb.Error) -> bool:
    return isinstance(error, duckdb.IOException) and "Could not set lock" in str(error)


def _lock_holder(error: duckdb.Error) -> str:
    match = re.search(r"\(PID (\d+)\)", str(error))
    return f"process {match.group(1)}" if match else "another process"


def _retry_while_locked(connect: Callable[[], T], path: Path, timeout_s: float, purpose: str) -> T:
    """Call ``connect`` until DuckDB's file lock is free, backing off from 50 ms to 1 s."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            return connect()
        except duckdb.Error as error:
            if not _is_file_lock_conflict(error):
                raise StorageError(f"cannot open the score database {path}: {error}") from error
            if time.monotonic() + delay > deadline:
                raise StoreBusyError(
                    f"cannot open the score database {path} to {purpose}: {_lock_holder(error)} "
                    f"has held it for more than {timeout_s:.0f} s; wait for it to finish "
                    f"(or stop it) and try again"
                ) from error
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def open_database(
    store: Store | Path | str, read_only: bool = False, timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
) -> Connection:
    """Open the score store; writable opens create it and apply pending migrations (a new lake
    gets the current schema).

    A writable open takes the writer lock (``scores.duckdb.lock``) before it connects and holds
    it while it migrates, so it never migrates under another writer's feet; it lets go once the
    database is at the current version (DuckDB's own file lock then keeps other processes out
    while the connection is open). The caller owns the connection and must close it soon.
    Flows should use `record_run` rather than holding one.
    """
    store = parse_store(store)
    if read_only:
        return open_reader(store)
    if isinstance(store, LakeStore):
        return lake.open_writer(store)
    path = store.path
    path.parent.mkdir(parents=True, exist_ok=True)
    with _write_lock(path, timeout_s), _removed_if_not_made(path):
        con = _retry_while_locked(lambda: duckdb.connect(str(path)), path, timeout_s, "write")
        try:
            set_roots(con)  # migration 010 makes paths under them relative
            refuse_foreign(con, path)
            apply_migrations(con)
        except BaseException:
            con.close()
            raise
    return con


def check_run_store(store: Store) -> None:
    """What a run's record step would refuse after the whole run, refused before it starts
    (``StorageError``, exit 2): a folder, a file that is no DuckDB database, another
    application's database, one from a newer tracerflow. Reads only (no lock file, nothing
    changed). A lake: its data folder, or, when none is given, that the lake is not new (a new
    lake needs one); a lake that cannot be reached now is left to the record step's retries."""
    if isinstance(store, LakeStore):
        if store.data_path is not None:
            lake.check_data_path(store.data_path)
        else:
            _check_lake_exists(store)
        return
    path = store.path
    if path.is_dir():
        raise StorageError(f"the score store {path} is a folder, not a .duckdb file")
    if not path.exists():
        return  # a new database, made by the first record
    try:
        con = duckdb.connect(str(path), read_only=True, config=READER_CONFIG)
    except duckdb.Error as error:
        if _is_file_lock_conflict(error):
            return  # another run is writing it: a tracerflow database, the record step waits
        raise StorageError(
            f"the score store {path} is not a readable DuckDB database: {_first_line(error)}"
        ) from None
    try:
        refuse_foreign(con, f"the score store {path}")
        version = schema_version(con)
    finally:
        con.close()
    if version > CURRENT_VERSION:
        raise StorageError(
            f"the score store {path} is at schema version {version}, newer than this "
            f"tracerflow knows ({CURRENT_VERSION}); upgrade tracerflow to record into it"
        )


def _check_lake_exists(store: LakeStore) -> None:
    """``StorageError`` when ``store`` is a lake nobody has written (it would need a data path)."""
    try:
        _shared_lake_reader(store).close()  # opened now, for the run's lookups to use
    except NoHistoryError:
        raise lake.needs_data_path(store) from None
    except StoreUnreachableError:
        return  # down for now: the record step retries, and says so if it stays down


def open_reader(
    store: Store | Path | str,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    as_of: AsOf | None = None,
) -> Connection:
    """A locked-down read-only connection at the current schema.

    File: retried while a writer holds it; a database written by an older tracerflow is migrated
    first (a short write under the lock); a DuckDB file without tracerflow's ``schema_version``
    table is refused, never migrated: a reader leaves a file it did not create exactly as it
    found it, with no lock file beside it. Lake: read at its newest snapshot, or at ``as_of``.
    Raises NoHistoryError when the store holds no history yet.
    """
    store = parse_store(store)
    if isinstance(store, LakeStore):
        return _open_lake_reader(store, as_of)
    if as_of is not None:
        raise StorageError(
            f"--as-of reads a lake's snapshots; the embedded file {store.path} keeps none "
            f"(set TRACERFLOW_STORE to a ducklake:postgres: store for time travel)"
        )
    path = store.path
    if not path.exists():
        raise NoHistoryError(
            f"no score database at {path}: run a flow first (`tracerflow demo`), "
            f"or point --store (TRACERFLOW_STORE) at an existing one"
        )

    def connect() -> Connection:
        try:
            con = duckdb.connect(str(path), read_only=True, config=READER_CONFIG)
        except duckdb.ConnectionException as error:
            raise StorageError(
                f"cannot open {path} read-only while this process holds a write connection to "
                f"it; close that connection first ({error})"
            ) from error
        set_roots(con)  # the views resolve stored paths against them
        return con

    con = _retry_while_locked(connect, path, timeout_s, "read")
    try:
        refuse_foreign(con, path)  # never migrated: a reader leaves it as it found it
        version = schema_version(con)
    except duckdb.Error as error:
        con.close()
        raise StorageError(f"cannot read the schema version of {path}: {error}") from error
    except StorageError:
        con.close()
        raise
    if version == CURRENT_VERSION:
        return con
    con.close()
    if version == 0:
        raise StorageError(
            f"{path} is not a tracerflow score database (it has no schema_version table); "
            f"read commands do not change it: point --store at a database tracerflow wrote"
        )
    if version > CURRENT_VERSION:
        raise StorageError(
            f"the score database {path} is at schema version {version}, newer than this "
            f"tracerflow knows ({CURRENT_VERSION}); upgrade tracerflow to read it"
        )
    open_database(store).close()  # migrates under the writer lock
    return _retry_while_locked(connect, path, timeout_s, "read")


def _shared_lake_reader(store: LakeStore) -> Connection:
    """A cursor on the process's one locked-down reader of ``store``, opened the first time."""
    return lake.shared_cursor(
        store, read_only=True, opener=lambda: lake.connect(store, read_only=True)
    )


def _open_lake_reader(store: LakeStore, as_of: AsOf | None) -> Connection:
    """A lake reader: a cursor on the process's shared reader of ``store``
    (``lake.shared_cursor``), or, at ``as_of``, a connection of its own. A lake an older
    tracerflow wrote is migrated first, in place, under its schema lock, as the file is; a
    snapshot from before a migration is history and is read as it is (a query that names a
    column added since fails in one line). A failure closes the shared reader: the next read
    reopens it."""
    try:
        if as_of is None:
            con = _shared_lake_reader(store)
        else:
            con = lake.connect(store, read_only=True, as_of=as_of)
    except StorageError as error:
        if as_of is None or "No snapshot found" not in str(error):
            raise
        raise snapshots.missing_snapshot_error(store, as_of) from None
    try:
        version = schema_version(con)
        if as_of is not None and as_of.time is not None and version > 0:
            snapshots.check_time_kept(store, as_of.time)
    except duckdb.Error as error:  # PostgreSQL lost between the ATTACH and this first read
        con.close()
        lake.forget(store, read_only=True)
        raise lake.lake_error(store, error, read_only=True) from None
    except BaseException:
        con.close()
        lake.forget(store, read_only=True)
        raise
    if version == CURRENT_VERSION or (as_of is not None and 0 < version < CURRENT_VERSION):
        return con
    con.close()
    lake.forget(store, read_only=True)
    if version == 0:
        raise NoHistoryError(
            f"no score history in {store.describe()}"
            + (f" at {as_of.describe()}" if as_of else "")
            + ": a lake gets its tables from the first run that records into it"
        )
    if version > CURRENT_VERSION:
        raise StorageError(
            f"the lake {store.describe()} is at schema version {version}, newer than this "
            f"tracerflow reads ({CURRENT_VERSION}); upgrade tracerflow to read it"
        )
    lake.open_writer(store).close()  # migrates in place under the schema lock
    return _shared_lake_reader(store)


@contextlib.contextmanager
def reading(
    store: Store | Path | str,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
    as_of: AsOf | None = None,
) -> Iterator[Connection]:
    """``with reading(store) as con:`` a reader that is closed as soon as the block ends.

    A DuckDB error inside the block (any: the PostgreSQL driver raises ``duckdb.Error`` itself,
    not only its subclasses) becomes one StorageError line with the password masked; a lake
    whose data folder has lost a file the catalog names is reported as damaged: a query never
    returns part of it; a lake whose PostgreSQL is lost mid-read is unreachable (exit 1).
    """
    store = parse_store(store)
    con = open_reader(store, timeout_s, as_of)
    try:
        yield con
    except duckdb.Error as error:
        if isinstance(store, LakeStore):  # the shared reader may be what broke: reopened next
            lake.forget(store, read_only=True)
        # Not chained: the driver's own message may hold a lake's password.
        raise _read_error(store, error) from None
    finally:
        con.close()


def _read_error(store: Store, error: duckdb.Error) -> StorageError:
    """The one line a read that failed inside ``reading`` ends in, with no password in it."""
    if not isinstance(store, LakeStore):
        return StorageError(f"reading {store.describe()} failed: {store.mask(_first_line(error))}")
    missing = re.search(r'Cannot open file "([^"]+)"', str(error))
    if isinstance(error, duckdb.IOException) and missing:
        return StorageError(
            f"the lake {store.describe()} is damaged: its data file {missing.group(1)} is "
            f"missing (restore the data folder from a backup); nothing was read"
        )
    return lake.lake_error(store, error, read_only=True)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


@contextlib.contextmanager
def _write_lock(path: Path, timeout_s: float) -> Iterator[None]:
    """The writers' lock of the file: an OS lock (``flock``) on ``<file>.lock``, so it dies with
    the process that holds it. A writer killed mid-write (SIGKILL, a full disk, a lost machine)
    can never leave it held for the next; that is why it is the only one (a Prefect concurrency
    slot outlived a killed run and blocked every later record)."""
    lock = FileLock(str(path) + ".lock")
    try:
        lock.acquire(timeout=timeout_s)
    except Timeout as error:
        raise StorageError(
            f"another tracerflow process has been writing {path} for more than {timeout_s:.0f} s "
            f"(lock file {lock.lock_file}); try again when it finishes"
        ) from error
    try:
        yield
    finally:
        lock.release()


def _combined(rows: Sequence[dict[str, object]], key: str) -> list[dict[str, object]]:
    """Rows sharing an id as one row: the first value of each column that is not NULL."""
    combined: dict[object, dict[str, object]] = {}
    for row in rows:
        known = combined.setdefault(row[key], dict(row))
        for column, value in row.items():
            if known[column] is None:
                known[column] = value
    return list(combined.values())


@dataclass(frozen=True)
class Merge:
    """Rows of a table of facts (transcoders, models, prompts) to merge by id: a new id is
    inserted; for an id recorded already, only the columns still NULL there are filled in (the
    first recorded value of a fact stays, a later run that knows one, a commit sha or a model
    shape, completes it, one that does not erases nothing). Rows sharing an id are combined
    first (``_combined``)."""

    table: str
    key: str
    rows: tuple[dict[str, object], ...]

    @classmethod
    def of(cls, table: str, key: str, rows: Sequence[dict[str, object]]) -> Merge:
        return cls(table, key, tuple(_combined(rows, key)))

    def without(self, settled: set[tuple[str, str]]) -> Merge:
        """The rows whose ids are not ``settled`` (``_settled``)."""
        rows = (row for row in self.rows if (self.table, str(row[self.key])) not in settled)
        return Merge(self.table, self.key, tuple(rows))

    def known_sql(self) -> tuple[str, list[object]]:
        """A SELECT of (table, id, columns NULL there) for the ids of ``rows`` recorded already,
        and its parameters: one arm of ``_known_rows``'s single read."""
        columns = [column for column in self.rows[0] if column != self.key]
        nulls = ", ".join(f"CASE WHEN {c} IS NULL THEN '{c}' END" for c in columns)
        marks = ", ".join("?" for _ in self.rows)
        sql = (
            f"SELECT '{self.table}', {self.key}::VARCHAR, "
            f"list_filter([{nulls}]::VARCHAR[], c -> c IS NOT NULL) "
            f"FROM {self.table} WHERE {self.key} IN ({marks})"
        )
        return sql, [row[self.key] for row in self.rows]


def _known_rows(
    con: Connection, merges: Sequence[Merge], run_id: str | None = None
) -> dict[tuple[str, str], list[str]]:
    """What the store holds of ``merges``' ids (and of the run ``run_id``), in one statement:
    (table, id) -> the columns still NULL in that row. One read, not one per table: a lake
    answers each statement with round trips to its catalog, inside the writers' turn."""
    arms: list[str] = []
    params: list[object] = []
    if run_id is not None:
        arms.append("SELECT 'runs', flow_run_id, []::VARCHAR[] FROM runs WHERE flow_run_id = ?")
        params.append(run_id)
    for merge in merges:
        if merge.rows:
            sql, ids = merge.known_sql()
            arms.append(sql)
            params += ids
    if not arms:
        return {}
    found = con.execute(" UNION ALL ".join(arms), params).fetchall()
    return {(str(table), str(key)): list(nulls) for table, key, nulls in found}


def _settled(
    merges: Sequence[Merge], known: dict[tuple[str, str], list[str]]
) -> set[tuple[str, str]]:
    """The (table, id)s of ``merges`` the store holds with nothing this write could fill in:
    none of their NULL columns is one these rows know. Settled stays settled: a fact's row is
    never deleted, and its columns only go from NULL to a value (``Merge``), so what a read
    before a lake's writers' turn finds settled needs no second look in the turn."""
    return {
        (merge.table, str(row[merge.key]))
        for merge in merges
        for row in merge.rows
        if (merge.table, str(row[merge.key])) in known
        and not any(
            row.get(column) is not None for column in known[merge.table, str(row[merge.key])]
        )
    }


def _apply_merge(con: Connection, merge: Merge, known: dict[tuple[str, str], list[str]]) -> None:
    """``merge`` given what the store holds (``_known_rows``): one INSERT of its new ids, and an
    UPDATE per recorded id that has a NULL column this run knows (rare: none in a steady
    history, so a lake rewrites nothing)."""
    new = [row for row in merge.rows if (merge.table, str(row[merge.key])) not in known]
    _insert_rows(con, merge.table, merge.key, new)
    for row in merge.rows:
        nulls = known.get((merge.table, str(row[merge.key])), [])
        fill = {column: row[column] for column in nulls if row.get(column) is not None}
        if fill:
            assignments = ", ".join(f"{column} = coalesce({column}, ?)" for column in fill)
            con.execute(
                f"UPDATE {merge.table} SET {assignments} WHERE {merge.key} = ?",
                [*fill.values(), row[merge.key]],
            )


def _insert_rows(con: Connection, table: str, key: str, rows: Sequence[dict[str, object]]) -> None:
    """INSERT ``rows`` into ``table`` in a few statements (a lake plans each one against its
    catalog, so one statement a row is slow). Two rows with one id are refused, as the file's
    PRIMARY KEY would, since a lake has no keys to refuse them."""
    ids = [row[key] for row in rows]
    if len(set(ids)) != len(ids):
        duplicate = next(i for i in ids if ids.count(i) > 1)
        # Wrapped by record_run: "recording flow run ... failed, nothing of it was written".
        raise ValueError(f"two {table} rows of one run have the same {key} {duplicate}")
    for start in range(0, len(rows), INSERT_BATCH_ROWS):
        batch = rows[start : start + INSERT_BATCH_ROWS]
        columns = list(batch[0])
        placeholders = ", ".join("(" + ", ".join("?" for _ in columns) + ")" for _ in batch)
        con.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES {placeholders}",
            [row[column] for row in batch for column in columns],
        )


def _transcoder_row(transcoder: TranscoderInfo) -> dict[str, object]:
    params = transcoder.activation_params or {}
    k = params.get("k")
    threshold_mean = params.get("threshold_mean")
    return {
        "transcoder_id": transcoder.transcoder_id,
        "source": transcoder.source,
        "revision": transcoder.revision,
        "commit_sha": transcoder.commit_sha,
        "content_hash": transcoder.content_hash,
        "kind": transcoder.kind,
        "n_layers": transcoder.n_layers,
        "d_model": transcoder.d_model,
        "d_features": transcoder.d_features,
        "activation": transcoder.activation,
        "activation_params_json": (
            canonical_json(params) if transcoder.activation_params is not None else None
        ),
        "k": int(k) if k is not None else None,
        "threshold_mean": float(threshold_mean) if threshold_mean is not None else None,
        "training_step": transcoder.training_step,
    }


def _model_row(model: ModelInfo) -> dict[str, object]:
    return {
        "model_id": model.model_id,
        "name": model.name,
        "n_layers": model.n_layers,
        "d_model": model.d_model,
        "d_vocab": model.d_vocab,
        "n_ctx": model.n_ctx,
    }


def _score_row(run: RunInfo, record: ScoreRecord) -> dict[str, object]:
    key = {
        "flow_run_id": run.flow_run_id,
        "transcoder_id": record.transcoder.transcoder_id,
        "model_id": record.model.model_id,
        "prompt_id": record.prompt_id,
        "params_hash": record.params_hash,
    }
    phase_seconds = record.phase_seconds
    return {
        "score_id": stable_id("score", *key.values()),
        **key,
        "params_json": canonical_json(record.params),
        "n_tokens": record.n_tokens,
        "status": record.status,
        "error": record.error,
        "replacement_score": record.replacement_score,
        "completeness_score": record.completeness_score,
        "pruned_replacement_score": record.pruned_replacement_score,
        "pruned_completeness_score": record.pruned_completeness_score,
        "n_active_features": record.n_active_features,
        "n_selected_features": record.n_selected_features,
        "n_logits": record.n_logits,
        "logit_cumulative_prob": record.logit_cumulative_prob,
        "n_pos": record.n_pos,
        "phase_seconds_json": canonical_json(phase_seconds) if phase_seconds is not None else None,
        "attribution_seconds": record.attribution_seconds,
        "peak_memory_bytes": record.peak_memory_bytes,
        "attribution_threads": record.attribution_threads,
        "attribution_path": record.attribution_path,
        "transcoder_format": record.transcoder.format,
        "transcoder_file_commits_json": (
            canonical_json(record.transcoder.file_commits)
            if record.transcoder.file_commits is not None
            else None
        ),
        "graph_path": record.graph_path,
        "graph_files_path": record.graph_files_path,
        "slug": record.slug,
        "created_at": to_utc_naive(record.created_at),
    }


@dataclass(frozen=True)
class RunRows:
    """A run's rows, built before the write (outside a lake's writers' turn: nothing in them
    depends on what the store holds): the run, the facts it merges, the rows it adds."""

    run: RunInfo
    merges: tuple[Merge, ...]  # transcoders, models, prompts
    scores: tuple[dict[str, object], ...]
    metrics: tuple[dict[str, object], ...]


def run_rows(
    run: RunInfo, records: Sequence[ScoreRecord], metrics: Sequence[MetricsRecord] = ()
) -> RunRows:
    """The rows of ``run``: its scores' and its metrics' transcoders and models (the scores'
    first, so a fact a score knows wins), its prompts, its score and metrics rows."""
    transcoders = [_transcoder_row(item.transcoder) for item in (*records, *metrics)]
    models = [_model_row(item.model) for item in (*records, *metrics)]
    prompts = [
        {"prompt_id": r.prompt_id, "text": r.prompt, "n_tokens": r.n_tokens} for r in records
    ]
    return RunRows(
        run=run,
        merges=(
            Merge.of("transcoders", "transcoder_id", transcoders),
            Merge.of("models", "model_id", models),
            Merge.of("prompts", "prompt_id", prompts),
        ),
        scores=tuple(_score_row(run, record) for record in records),
        metrics=tuple(row for m in metrics for row in metrics_rows(run.flow_run_id, m)),
    )


def _write_run_rows(
    con: Connection, rows: RunRows, settled: set[tuple[str, str]] | None = None
) -> int:
    """Write ``rows`` unless their run is recorded already; the score rows added. The caller
    holds the transaction. One read answers every question about what the store holds (but for
    the ids a read before the transaction found ``settled``), then one INSERT per table
    (parents before children); a failure anywhere (a duplicate id, a value DuckDB refuses)
    rolls back the whole run."""
    run = rows.run
    merges = [merge.without(settled or set()) for merge in rows.merges]
    known = _known_rows(con, merges, run_id=run.flow_run_id)
    if ("runs", run.flow_run_id) in known:
        return 0
    con.execute(
        "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            run.flow_run_id, run.flow_name, run.deployment_name, run.suite_name,
            to_utc_naive(run.started_at),
            to_utc_naive(run.finished_at) if run.finished_at else None,
            run.status, run.tracerflow_version, run.circuit_tracer_version, run.torch_version,
            run.device, run.host, datetime.now(UTC).replace(tzinfo=None),
        ],
    )  # fmt: skip
    for merge in merges:
        _apply_merge(con, merge, known)
    _insert_rows(con, "scores", "score_id", rows.scores)
    _insert_rows(con, "transcoder_metrics", "metrics_id", rows.metrics)
    return len(rows.scores)


def _insert_run(con: Connection, run: RunInfo, records: list[ScoreRecord]) -> int:
    """The run's rows (``_write_run_rows``), in the caller's transaction."""
    return _write_run_rows(con, run_rows(run, records))


def record_run(
    store: Store | Path | str,
    run: RunInfo,
    records: list[ScoreRecord],
    timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
    metrics: Sequence[MetricsRecord] = (),
) -> int:
    """Write one flow run, its scores and its transcoder metrics in one transaction; return the
    score rows added.

    Idempotent on ``run.flow_run_id``: if the run is already recorded, nothing is added and
    nothing replaced (returns 0). Any failure rolls the whole run back and raises StorageError,
    so a store never holds part of a run.

    Args:
        timeout_s: how long to wait for the file lock and for other processes to let go, or
            for a lake's concurrent writers to let this one commit.
        metrics: one record per evaluated transcoder (``transcoder_metrics`` rows).
    """
    store = parse_store(store)
    # Everything that does not need the store's newest state is done before a lake writer's
    # turn, which every other writer waits for: the rows, and which facts are settled.
    rows = run_rows(run, records, metrics)
    settled: set[tuple[str, str]] = set()

    def look_ahead(con: Connection) -> None:
        settled.update(_settled(rows.merges, _known_rows(con, rows.merges)))

    return write_store(
        store,
        lambda con: _write_run_rows(con, rows, settled),
        timeout_s,
        f"recording flow run {run.flow_run_id}",
        ahead=look_ahead,
    )


def write_store(
    store: Store,
    body: Callable[[Connection], T],
    timeout_s: float,
    what: str,
    ahead: Callable[[Connection], None] | None = None,
) -> T:
    """Run ``body`` in one transaction on a file or a lake; any failure is one StorageError
    line (``what`` failed, nothing of it was written) with the lake's password masked.
    ``ahead``: a lake's reads before the writers' turn (``lake.write``); the file, whose write
    is a few ms under its lock, has no turn to shorten."""
    try:
        if isinstance(store, LakeStore):
            return lake.write(store, body, timeout_s, ahead=ahead)
        return write_file(store, body, timeout_s)
    except StorageError as error:
        if store.mask(str(error)) == str(error):
            raise
        raise StorageError(store.mask(str(error))) from None  # no chained driver message
    except Exception as error:
        raise StorageError(
            f"{what} failed, nothing of it was written: {store.mask(str(error))}"
        ) from None  # the driver's own message may hold the password


def write_file(
    store: FileStore,
    body: Callable[[Connection], T],
    timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
    prepare: Callable[[Connection], None] | None = None,
) -> T:
    """Run ``body`` in one transaction on the file, under the writer lock, after migrating it.
    ``prepare`` runs once before, outside the transaction, on a connection that can also attach
    a lake (``store copy``)."""
    path = store.path
    path.parent.mkdir(parents=True, exist_ok=True)

    def connect() -> Connection:
        return lake.new_connection(str(path)) if prepare else duckdb.connect(str(path))

    with _write_lock(path, timeout_s), _removed_if_not_made(path):
        con = _retry_while_locked(connect, path, timeout_s, "write")
        try:
            set_roots(con)
            refuse_foreign(con, path)
            apply_migrations(con)
            if prepare is not None:
                prepare(con)
            con.execute("BEGIN TRANSACTION")
            try:
                added = body(con)
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
        finally:
            con.close()
    return added


@contextlib.contextmanager
def _removed_if_not_made(path: Path) -> Iterator[None]:
    """A database this write creates is removed again when the write fails: on a full disk
    DuckDB leaves a file it could not finish, which every later open refuses ("not a valid
    DuckDB database file"), so the next run, with space freed, could not record. Held under the
    writer lock, so no other writer can have created the file meanwhile."""
    existed = path.exists()
    try:
        yield
    except BaseException:
        if not existed:
            for leftover in (path, path.with_name(path.name + ".wal")):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)
        raise


def lake_snapshots(store: Store | Path | str) -> list[dict[str, object]]:
    """A lake's snapshots, newest first: id, time (UTC) and what each changed."""
    store = parse_store(store)
    if not isinstance(store, LakeStore):
        raise StorageError(
            f"{store.describe()} is the embedded file, which keeps no snapshots; a "
            f"ducklake:postgres: store does"
        )
    with reading(store) as con:
        rows = con.execute(
            f"SELECT snapshot_id, snapshot_time, changes FROM ducklake_snapshots('{lake.CATALOG}') "
            "ORDER BY snapshot_id DESC"
        ).fetchall()
    return [
        {
            "snapshot_id": snapshot_id,
            "snapshot_time": to_utc_naive(time),
            "changes": "; ".join(
                f"{kind}: {', '.join(map(str, items))}" for kind, items in changes.items()
            ),
        }
        for snapshot_id, time, changes in rows
    ]
