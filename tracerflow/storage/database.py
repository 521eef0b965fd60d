"""Opening the score database and writing one flow run into it.

DuckDB lets one process hold the file for writing and refuses every other process meanwhile, so a
run writes once, at its end, in one transaction under a file lock (``scores.duckdb.lock``), and
readers open read-only, locked down, and retry briefly. The rules: docs/database.md ("Who writes,
who reads").
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb
from filelock import FileLock, Timeout

from tracerflow.errors import StorageError
from tracerflow.hashing import canonical_json
from tracerflow.storage.metrics import MetricsRecord, metrics_rows
from tracerflow.storage.migrations import CURRENT_VERSION, apply_migrations, schema_version
from tracerflow.storage.records import (
    ModelInfo,
    RunInfo,
    ScoreRecord,
    TranscoderInfo,
    stable_id,
    to_utc_naive,
)

Connection = duckdb.DuckDBPyConnection
T = TypeVar("T")

DEFAULT_WRITE_TIMEOUT_S = 60.0
DEFAULT_READ_TIMEOUT_S = 10.0

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
                raise StorageError(
                    f"cannot open the score database {path} to {purpose}: {_lock_holder(error)} "
                    f"has held it for more than {timeout_s:.0f} s; wait for it to finish "
                    f"(or stop it) and try again"
                ) from error
            time.sleep(delay)
            delay = min(delay * 2, 1.0)


def open_database(
    path: Path | str, read_only: bool = False, timeout_s: float = DEFAULT_WRITE_TIMEOUT_S
) -> Connection:
    """Open the score database; writable opens create it and apply pending migrations.

    A writable open takes the writer lock (``scores.duckdb.lock``) before it connects and holds
    it while it migrates, so it never migrates under another writer's feet; it lets go once the
    database is at the current version (DuckDB's own file lock then keeps other processes out
    while the connection is open). The caller owns the connection and must close it soon.
    Flows should use `record_run` rather than holding one.
    """
    path = Path(path)
    if read_only:
        return open_reader(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _write_lock(path, timeout_s):
        con = _retry_while_locked(lambda: duckdb.connect(str(path)), path, timeout_s, "write")
        try:
            apply_migrations(con)
        except BaseException:
            con.close()
            raise
    return con


def open_reader(path: Path | str, timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> Connection:
    """A locked-down read-only connection at the current schema, retried while a writer holds it.

    A database written by an older tracerflow is migrated first (a short write under the lock).
    A DuckDB file without tracerflow's ``schema_version`` table is refused, never migrated: a
    reader leaves a file it did not create exactly as it found it, with no lock file beside it.
    """
    path = Path(path)
    if not path.exists():
        raise StorageError(
            f"no score database at {path}: run a flow first (`tracerflow demo`), "
            f"or point --db / TRACERFLOW_HOME at an existing one"
        )

    def connect() -> Connection:
        try:
            return duckdb.connect(str(path), read_only=True, config=READER_CONFIG)
        except duckdb.ConnectionException as error:
            raise StorageError(
                f"cannot open {path} read-only while this process holds a write connection to "
                f"it; close that connection first ({error})"
            ) from error

    con = _retry_while_locked(connect, path, timeout_s, "read")
    try:
        version = schema_version(con)
    except duckdb.Error as error:
        con.close()
        raise StorageError(f"cannot read the schema version of {path}: {error}") from error
    if version == CURRENT_VERSION:
        return con
    con.close()
    if version == 0:
        raise StorageError(
            f"{path} is not a tracerflow score database (it has no schema_version table); "
            f"read commands do not change it: point --db at a database tracerflow wrote"
        )
    if version > CURRENT_VERSION:
        raise StorageError(
            f"the score database {path} is at schema version {version}, newer than this "
            f"tracerflow knows ({CURRENT_VERSION}); upgrade tracerflow to read it"
        )
    open_database(path).close()  # migrates under the writer lock
    return _retry_while_locked(connect, path, timeout_s, "read")


@contextlib.contextmanager
def reading(path: Path | str, timeout_s: float = DEFAULT_READ_TIMEOUT_S) -> Iterator[Connection]:
    """``with reading(db_path) as con:`` a reader that is closed as soon as the block ends."""
    con = open_reader(path, timeout_s)
    try:
        yield con
    finally:
        con.close()


@contextlib.contextmanager
def _write_lock(path: Path, timeout_s: float) -> Iterator[None]:
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


def _upsert(table: str, key: str, row: dict[str, object], n_rows: int = 1) -> str:
    """INSERT of ``n_rows`` rows of ``table`` (with ``row``'s columns, distinct ids) that, when
    an id is recorded already, only fills in the columns still NULL there: the first recorded
    value of a fact stays, a later run that knows one (a commit sha, a model shape) completes it,
    a later run that does not erases nothing."""
    columns = ", ".join(row)
    fill = ", ".join(
        f"{column} = coalesce({table}.{column}, excluded.{column})"
        for column in row
        if column != key
    )
    placeholders = f"({', '.join('?' for _ in row)})"
    return (
        f"INSERT INTO {table} ({columns}) VALUES {', '.join(placeholders for _ in range(n_rows))} "
        f"ON CONFLICT ({key}) DO UPDATE SET {fill}"
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
        "graph_path": record.graph_path,
        "graph_files_path": record.graph_files_path,
        "slug": record.slug,
        "created_at": to_utc_naive(record.created_at),
    }


def _insert_run(con: Connection, run: RunInfo, records: list[ScoreRecord]) -> int:
    """The run's rows, parents before children; the caller holds the transaction."""
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
    parents: dict[tuple[str, str], list[dict[str, object]]] = {
        ("transcoders", "transcoder_id"): [],
        ("models", "model_id"): [],
        ("prompts", "prompt_id"): [],
    }
    for record in records:
        parents["transcoders", "transcoder_id"].append(_transcoder_row(record.transcoder))
        parents["models", "model_id"].append(_model_row(record.model))
        parents["prompts", "prompt_id"].append(
            {"prompt_id": record.prompt_id, "text": record.prompt, "n_tokens": record.n_tokens}
        )
    for (table, key), rows in parents.items():
        _upsert_rows(con, table, key, rows)
    # A failure here (a duplicate key, a value DuckDB refuses) rolls back the whole run.
    _insert_rows(con, "scores", [_score_row(run, record) for record in records])
    return len(records)


def _upsert_rows(con: Connection, table: str, key: str, rows: list[dict[str, object]]) -> None:
    """``_upsert`` of every row in order, in few statements (a statement costs DuckDB
    milliseconds; a suite has hundreds of rows): identical rows once, then one statement for the
    first row of each id, then one per later row of an id already in it (DuckDB updates a row
    once per statement), which fills in what the earlier ones left NULL, as row by row would."""
    distinct = list(dict.fromkeys(tuple(row.items()) for row in rows))
    first: dict[object, dict[str, object]] = {}
    later: list[dict[str, object]] = []
    for items in distinct:
        row = dict(items)
        if row[key] in first:
            later.append(row)
        else:
            first[row[key]] = row
    for batch in (list(first.values()), *([row] for row in later)):
        if batch:
            con.execute(
                _upsert(table, key, batch[0], n_rows=len(batch)),
                [value for row in batch for value in row.values()],
            )


def _insert_rows(con: Connection, table: str, rows: list[dict[str, object]]) -> None:
    """One INSERT of ``rows`` (all with the same columns) into ``table``."""
    if not rows:
        return
    placeholders = f"({', '.join('?' for _ in rows[0])})"
    con.execute(
        f"INSERT INTO {table} ({', '.join(rows[0])}) "
        f"VALUES {', '.join(placeholders for _ in rows)}",
        [value for row in rows for value in row.values()],
    )


def _insert_metrics(con: Connection, run: RunInfo, metrics: Sequence[MetricsRecord]) -> None:
    """The run's transcoder metrics rows (after ``_insert_run``, in its transaction)."""
    for record in metrics:
        for table, key, row in (
            ("transcoders", "transcoder_id", _transcoder_row(record.transcoder)),
            ("models", "model_id", _model_row(record.model)),
        ):
            con.execute(_upsert(table, key, row), list(row.values()))
        for row in metrics_rows(run.flow_run_id, record):
            con.execute(
                f"INSERT INTO transcoder_metrics ({', '.join(row)}) "
                f"VALUES ({', '.join('?' for _ in row)})",
                list(row.values()),
            )


def record_run(
    db_path: Path | str,
    run: RunInfo,
    records: list[ScoreRecord],
    guard: AbstractContextManager[object] | None = None,
    timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
    metrics: Sequence[MetricsRecord] = (),
) -> int:
    """Write one flow run, its scores and its transcoder metrics in one transaction; return the
    score rows added.

    Idempotent on ``run.flow_run_id``: if the run is already recorded, nothing is added and
    nothing replaced (returns 0). Any failure rolls the whole run back and raises StorageError,
    so a database never holds part of a run.

    Args:
        guard: an outer context manager held around the write, e.g. a Prefect global
            concurrency limit when a Prefect server is in use.
        timeout_s: how long to wait for the file lock and for other processes to let go.
        metrics: one record per evaluated transcoder (``transcoder_metrics`` rows).
    """
    db_path = Path(db_path)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with guard if guard is not None else contextlib.nullcontext(), _write_lock(db_path, timeout_s):
        con = _retry_while_locked(lambda: duckdb.connect(str(db_path)), db_path, timeout_s, "write")
        try:
            apply_migrations(con)
            con.execute("BEGIN TRANSACTION")
            try:
                already = con.execute(
                    "SELECT count(*) FROM runs WHERE flow_run_id = ?", [run.flow_run_id]
                ).fetchone()
                added = 0 if already and already[0] else _insert_run(con, run, records)
                if not (already and already[0]):
                    _insert_metrics(con, run, metrics)
                con.execute("COMMIT")
            except Exception as error:
                con.execute("ROLLBACK")
                raise StorageError(
                    f"recording flow run {run.flow_run_id} failed, nothing of it was written: "
                    f"{error}"
                ) from error
        finally:
            con.close()
    return added
