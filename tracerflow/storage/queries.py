"""Read questions over the score database: history, comparisons, the graph index, free SQL.

Every function reads through its own short-lived, locked-down read-only connection (`reading`;
on a lake, a cursor on the process's one reader), so it works while no flow is writing and waits
briefly while one is. Times are UTC; functions that
return dicts give timezone-aware datetimes.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import duckdb

from tracerflow.errors import StorageError
from tracerflow.storage import lake
from tracerflow.storage.database import reading
from tracerflow.storage.records import TranscoderInfo, to_utc_naive
from tracerflow.storage.stats import MeanInterval, mean_interval
from tracerflow.storage.store import AsOf, LakeStore, NoHistoryError, StoreLike, parse_store

# What `tracerflow sql` may run. Anything else is refused before it reaches the database; the
# read-only, no-file-access connection is the second wall behind this one.
READ_STATEMENT_TYPES = frozenset({"SELECT", "EXPLAIN"})


def _aware(value: Any) -> Any:
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def _dicts(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any]) -> list[dict[str, Any]]:
    cursor = con.execute(sql, params)
    columns = [d[0] for d in cursor.description]
    return [
        {column: _aware(value) for column, value in zip(columns, row, strict=True)}
        for row in cursor.fetchall()
    ]


# A lake's answers to the viewer's queries, each with the snapshot it was read at (see
# ``rows_per_snapshot``): {(store URL, query): (snapshot id, rows)}.
_by_snapshot: dict[tuple[str, str], tuple[int, list[dict[str, Any]]]] = {}
_by_snapshot_lock = threading.Lock()


def rows_per_snapshot(store: StoreLike, sql: str) -> list[dict[str, Any]]:
    """The rows of ``sql`` (as ``_dicts``); on a lake, read again only when the lake has a newer
    snapshot than the last answer's.

    The viewer asks the same questions on every page while a lake changes a few times a night;
    a page with nothing new then reads only the snapshot id (one catalog query), in the same
    transaction as the answer would be read, so the answer is the one that snapshot gives. The
    embedded file has no snapshot to go by and is read each time."""
    store = parse_store(store)
    with reading(store) as con:
        if not isinstance(store, LakeStore):
            return _dicts(con, sql, [])
        con.execute("BEGIN TRANSACTION")
        try:
            snapshot = con.execute(f"SELECT id FROM {lake.CATALOG}.current_snapshot()").fetchone()
            key = (store.url, sql)
            with _by_snapshot_lock:
                cached = _by_snapshot.get(key)
            if snapshot is not None and cached is not None and cached[0] == snapshot[0]:
                rows = cached[1]
            else:
                rows = _dicts(con, sql, [])
                if snapshot is not None:
                    with _by_snapshot_lock:
                        _by_snapshot[key] = (int(snapshot[0]), rows)
        finally:
            con.execute("ROLLBACK")
    return [dict(row) for row in rows]  # a caller may change its rows; the cached ones stay


def parse_since(since: date | datetime | str) -> datetime:
    """A date or ISO time to a naive UTC datetime; a date means its midnight UTC."""
    if isinstance(since, str):
        try:
            since = datetime.fromisoformat(since)
        except ValueError as error:
            raise StorageError(
                f"--since {since!r} is not a date or time; use e.g. 2025-06-01 or 2025-06-01T12:00"
            ) from error
    if not isinstance(since, datetime):
        since = datetime(since.year, since.month, since.day)
    return to_utc_naive(since)


HISTORY_COLUMNS = (
    "created_at", "flow_run_id", "suite_name", "transcoder_source", "transcoder_version",
    "version_changed", "transcoder_kind", "model_name", "prompt", "params_hash", "status",
    "replacement_score",
    "previous_replacement_score", "replacement_change", "completeness_score",
    "previous_completeness_score", "completeness_change", "pruned_replacement_score",
    "pruned_completeness_score", "error", "run_started_at", "slug", "graph_path",
    "graph_files_path",
)  # fmt: skip


def history(
    store: StoreLike,
    transcoder: str | None = None,
    prompt: str | None = None,
    since: date | datetime | str | None = None,
    as_of: AsOf | None = None,
    suite: str | None = None,
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Every score, newest first, each with the change since the previous run of its series.

    A series is one transcoder source × model × prompt × parameter set, across changes of the
    source's weights: ``transcoder_version`` names the weights (their hash's first 8 hex
    digits) and ``version_changed`` is true on a series' first row with new weights. The change
    is measured against its previous successful score, before any filter here is applied.

    Args:
        transcoder: a transcoder source (``georglange/...``) or a transcoder id.
        prompt: the exact prompt text.
        since: only scores recorded at or after this date/time (UTC).
        as_of: read a lake as it was at this snapshot or time.
        suite: only scores of runs of this suite.
        limit: only the newest this many scores.
    """
    conditions, params = [], []
    if transcoder is not None:
        conditions.append("(transcoder_source = ? OR transcoder_id = ?)")
        params += [transcoder, transcoder]
    if prompt is not None:
        conditions.append("prompt = ?")
        params.append(prompt)
    if since is not None:
        conditions.append("created_at >= ?")
        params.append(parse_since(since))
    if suite is not None:
        conditions.append("suite_name = ?")
        params.append(suite)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    limited = f" LIMIT {int(limit)}" if limit is not None else ""
    with reading(store, as_of=as_of) as con:
        # A lake read as it was before a migration has the views of its time: a column added
        # since (transcoder_version, say) reads as NULL rather than failing the query.
        known = set(view_columns(con, "score_history"))
        selected = [c if c in known else f"NULL AS {c}" for c in HISTORY_COLUMNS]
        rows = _dicts(
            con,
            f"SELECT {', '.join(selected)} FROM score_history {where} "
            f"ORDER BY created_at DESC, flow_run_id DESC, transcoder_source, prompt{limited}",
            params,
        )
        if not rows and transcoder is not None:
            _check_known_transcoder(con, transcoder)
        return rows


def view_columns(con: Any, view: str) -> list[str]:
    """The columns ``view`` has on this connection (a lake read as of an older snapshot has
    the views of that snapshot's schema)."""
    return [str(row[0]) for row in con.execute(f"DESCRIBE {view}").fetchall()]


def transcoder_summary(store: StoreLike) -> list[dict[str, Any]]:
    """The `transcoder_summary` view: per transcoder, mean / min / max / 95% interval of scores."""
    with reading(store) as con:
        return _dicts(
            con, "SELECT * FROM transcoder_summary ORDER BY transcoder_source, model_name", []
        )


@dataclass(frozen=True)
class CompareResult:
    """Two transcoders on the prompts both were scored on; differences are B minus A.

    Each side contributes its newest successful score per model × prompt, whatever its
    parameters; ``n_params_differ`` counts the pairs scored under different parameter sets.
    """

    source_a: str
    source_b: str
    rows: list[dict[str, Any]]
    replacement: MeanInterval  # of replacement_score(B) − replacement_score(A), paired by prompt
    completeness: MeanInterval
    n_params_differ: int
    missing_prompts: list[str] = field(default_factory=list)


def _known_sources(con: duckdb.DuckDBPyConnection) -> list[str]:
    rows = con.execute("SELECT DISTINCT source FROM transcoders ORDER BY source").fetchall()
    return [row[0] for row in rows]


def _unknown_transcoder(source: str, known: list[str]) -> StorageError:
    return StorageError(
        f"no scores for transcoder {source!r}; recorded transcoders: {', '.join(known) or 'none'}"
    )


def _check_known_transcoder(con: duckdb.DuckDBPyConnection, transcoder: str) -> None:
    """``StorageError`` (exit 2) listing the recorded sources when ``transcoder`` is neither a
    recorded source nor a transcoder id: a typo, not an empty history."""
    is_id = con.execute(
        "SELECT count(*) FROM transcoders WHERE transcoder_id = ?", [transcoder]
    ).fetchone()
    known = _known_sources(con)
    if transcoder not in known and not (is_id and is_id[0]):
        raise _unknown_transcoder(transcoder, known)


def compare(
    store: StoreLike,
    source_a: str,
    source_b: str,
    prompts: list[str] | None = None,
) -> CompareResult:
    """Paired comparison of two transcoder sources over their common prompts (B − A)."""
    if source_a == source_b:
        raise StorageError(f"compare needs two different transcoders, got {source_a!r} twice")
    with reading(store) as con:
        known = _known_sources(con)
        for source in (source_a, source_b):
            if source not in known:
                raise _unknown_transcoder(source, known)
        rows = _dicts(
            con,
            """
            WITH newest AS (
                SELECT transcoder_source, model_name, prompt, params_hash,
                       replacement_score, completeness_score,
                       row_number() OVER (
                           PARTITION BY transcoder_source, model_id, prompt_id
                           ORDER BY created_at DESC, flow_run_id DESC
                       ) AS newest_first
                FROM scores_wide
                WHERE status = 'ok' AND transcoder_source IN ($a, $b)
                  AND ($prompts IS NULL OR list_contains($prompts, prompt))
            )
            SELECT a.model_name, a.prompt,
                   a.replacement_score AS a_replacement_score,
                   b.replacement_score AS b_replacement_score,
                   b.replacement_score - a.replacement_score AS replacement_difference,
                   a.completeness_score AS a_completeness_score,
                   b.completeness_score AS b_completeness_score,
                   b.completeness_score - a.completeness_score AS completeness_difference,
                   a.params_hash AS a_params_hash, b.params_hash AS b_params_hash
            FROM newest a
            JOIN newest b ON a.model_name = b.model_name AND a.prompt = b.prompt
            WHERE a.transcoder_source = $a AND b.transcoder_source = $b
              AND a.newest_first = 1 AND b.newest_first = 1
            ORDER BY replacement_difference, a.prompt
            """,
            {"a": source_a, "b": source_b, "prompts": prompts},  # type: ignore[arg-type]
        )
    if not rows:
        raise StorageError(
            f"{source_a!r} and {source_b!r} have no successfully scored prompt in common"
            + (" among the prompts given" if prompts else "")
        )
    compared = {row["prompt"] for row in rows}
    return CompareResult(
        source_a=source_a,
        source_b=source_b,
        rows=rows,
        replacement=mean_interval(
            [r["replacement_difference"] for r in rows if r["replacement_difference"] is not None]
        ),
        completeness=mean_interval(
            [r["completeness_difference"] for r in rows if r["completeness_difference"] is not None]
        ),
        n_params_differ=sum(r["a_params_hash"] != r["b_params_hash"] for r in rows),
        missing_prompts=[p for p in prompts or [] if p not in compared],
    )


def scores_of_run(store: StoreLike, flow_run_id: str) -> list[dict[str, Any]]:
    """The rows one (partly) failed run recorded, as `tracerflow run` prints them; none when
    there is no database yet."""
    try:
        with reading(store) as con:
            return _dicts(
                con,
                "SELECT transcoder_source, prompt, replacement_score, completeness_score, "
                "pruned_replacement_score, pruned_completeness_score, n_selected_features, "
                "attribution_seconds, status "
                "FROM scores_wide WHERE flow_run_id = ? ORDER BY transcoder_source, prompt",
                [flow_run_id],
            )
    except NoHistoryError:
        return []


def run_sql(store: StoreLike, sql: str) -> tuple[list[str], list[tuple[Any, ...]]]:
    """Run one read query (SELECT, WITH ..., FROM ..., PIVOT, UNPIVOT, EXPLAIN) and return its
    columns and rows.

    Anything else (DELETE, DROP, INSERT, UPDATE, CREATE, ATTACH, COPY, EXPORT, INSTALL, LOAD,
    PRAGMA, SET, CALL, ...) raises StorageError before it runs, and the connection is read-only
    with no access to files besides the database, so nothing is changed or written either way.
    """
    store = parse_store(store)
    with reading(store) as con:
        try:
            statements = con.extract_statements(sql)
        except duckdb.Error as error:
            raise StorageError(f"the SQL does not parse: {_first_line(error)}") from error
        count = statement_count(sql)
        if count != 1:
            raise StorageError(
                f"give exactly one SQL statement, got {count} "
                "(separate queries are separate `tracerflow sql` calls)"
            )
        refused = refused_statement_type([statement.type.name for statement in statements])
        if refused is not None:
            raise StorageError(
                f"`tracerflow sql` only reads: {refused} statements are refused. The score "
                "database is written only by flow runs; to export results use --format "
                "csv|json|parquet --out FILE"
            )
        try:
            cursor = con.execute(sql)
            columns = [d[0] for d in cursor.description] if cursor.description else []
            return columns, cursor.fetchall()
        except duckdb.Error as error:
            if lake.is_unreachable(error):
                raise  # the store failed, not the query: `reading` says so (exit 1)
            # Not chained, and masked: a lake's driver may name its conninfo, password included.
            raise StorageError(f"the query failed: {store.mask(_first_line(error))}") from None


def statement_count(sql: str) -> int:
    """How many statements ``sql`` holds: runs of tokens between semicolons, by DuckDB's own
    tokenizer, so a ``;`` in a string, a quoted name or a comment separates nothing. Counted on
    the text because DuckDB's parser may turn one statement into several (``PIVOT``)."""
    text = sql.encode()  # the tokenizer's offsets are byte offsets
    count, in_statement = 0, False
    for offset, _ in duckdb.tokenize(sql):
        if text[offset : offset + 1] == b";":
            in_statement = False
        elif not in_statement:
            count, in_statement = count + 1, True
    return count


def refused_statement_type(kinds: list[str]) -> str | None:
    """The statement type `tracerflow sql` refuses in what DuckDB's parser made of one
    statement (``kinds``, in order), or None when it only reads. A ``PIVOT`` whose columns come
    from the data parses to ``CREATE`` statements (temporary enum types of those values,
    dropped with the connection) and then its ``SELECT``: that shape alone may hold a
    ``CREATE``. Inside another statement (``INSERT INTO t PIVOT ...``) the same ``CREATE``s come
    wrapped in ``TRANSACTION`` or ``SET`` statements; the type named is the outer statement's."""
    if len(kinds) == 1 and kinds[0] in READ_STATEMENT_TYPES:
        return None
    if len(kinds) > 1 and set(kinds[:-1]) == {"CREATE"} and kinds[-1] == "SELECT":
        return None  # a PIVOT
    unwrapped = [kind for kind in kinds if kind not in {"TRANSACTION", "SET"}] or kinds
    outer = unwrapped[-1] if unwrapped else "EMPTY"
    if outer in READ_STATEMENT_TYPES:  # EXPLAIN of a PIVOT: its CREATEs are what is refused
        return next(kind for kind in kinds if kind not in READ_STATEMENT_TYPES)
    return outer


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0]


def graph_index(store: StoreLike) -> list[dict[str, Any]]:
    """One entry per exported graph (a score with a slug), from the newest record of each slug.

    The viewer's index page lists these, newest first.
    """
    return rows_per_snapshot(
        store,
        """
            SELECT slug, transcoder_source, transcoder_revision, transcoder_commit_sha,
                   transcoder_content_hash, transcoder_kind, model_name, prompt, status,
                   replacement_score, completeness_score,
                   pruned_replacement_score, pruned_completeness_score,
                   graph_path, graph_files_path, flow_run_id, suite_name,
                   created_at AS recorded_at, run_finished_at
            FROM (
                SELECT *, row_number() OVER (
                    PARTITION BY slug ORDER BY created_at DESC, flow_run_id DESC
                ) AS newest_first
                FROM scores_wide
                WHERE slug IS NOT NULL
            )
            WHERE newest_first = 1
            ORDER BY recorded_at DESC, slug
            """,
    )


@dataclass(frozen=True)
class PromptScore:
    """One row of a suite run, as the regression check pairs it: by transcoder (source), model,
    prompt and parameter set."""

    transcoder: str  # the source, as the suite names it
    model: str
    prompt: str
    params_hash: str
    status: str  # "ok" | "failed"
    replacement_score: float | None


@dataclass(frozen=True)
class SuiteRunScores:
    """Every row (successful or failed) of one run of a suite."""

    flow_run_id: str
    started_at: datetime | None
    scores: list[PromptScore]


def previous_suite_run_scores(
    store: StoreLike,
    suite_name: str,
    before_flow_run_id: str,
    transcoders: Sequence[str] | None = None,
) -> SuiteRunScores | None:
    """The rows of the run of ``suite_name`` before ``before_flow_run_id``, or None.

    "Before" is by start time when ``before_flow_run_id`` is recorded already; otherwise it is
    the newest recorded run of the suite. Runs without any successful score are skipped. With
    ``transcoders`` (sources), only runs that scored one of them count, and only their rows are
    returned: a suite fanned out over workers records one run per transcoder, and a transcoder's
    previous run is its own, not a sibling's.
    """
    sources = list(transcoders) if transcoders is not None else None
    try:
        with reading(store) as con:
            previous = con.execute(
                """
                SELECT r.flow_run_id, r.started_at
                FROM runs r
                WHERE r.suite_name = $suite AND r.flow_run_id <> $current
                  AND r.started_at < coalesce(
                      (SELECT started_at FROM runs WHERE flow_run_id = $current),
                      'infinity'::TIMESTAMP)
                  AND EXISTS (
                      SELECT 1 FROM scores_wide s
                      WHERE s.flow_run_id = r.flow_run_id AND s.status = 'ok'
                        AND ($sources IS NULL OR list_contains($sources, s.transcoder_source)))
                ORDER BY r.started_at DESC, r.flow_run_id DESC
                LIMIT 1
                """,
                {"suite": suite_name, "current": before_flow_run_id, "sources": sources},
            ).fetchone()
            if previous is None:
                return None
            rows = con.execute(
                """
                SELECT transcoder_source, model_name, prompt, params_hash, status, replacement_score
                FROM scores_wide
                WHERE flow_run_id = $run
                  AND ($sources IS NULL OR list_contains($sources, transcoder_source))
                ORDER BY transcoder_source, prompt
                """,
                {"run": previous[0], "sources": sources},
            ).fetchall()
    except NoHistoryError:
        return None
    return SuiteRunScores(
        flow_run_id=previous[0],
        started_at=_aware(previous[1]),
        scores=[PromptScore(*row) for row in rows],
    )


def latest_transcoder(store: StoreLike, source: str) -> TranscoderInfo | None:
    """The transcoder most recently scored under ``source`` (by its newest score row), or None.

    A run that fails before it knows the transcoder's weights (a download or a conversion that
    fails) records its rows under this one, so they stay in the series of its earlier runs.
    """
    try:
        with reading(store) as con:
            row = con.execute(
                """
                SELECT t.source, t.revision, t.commit_sha, t.content_hash, t.kind, t.n_layers,
                       t.d_model, t.d_features, t.activation, t.training_step,
                       t.activation_params_json
                FROM transcoders t JOIN scores s USING (transcoder_id)
                WHERE t.source = ?
                ORDER BY s.created_at DESC, s.flow_run_id DESC
                LIMIT 1
                """,
                [source],
            ).fetchone()
    except NoHistoryError:
        return None
    if row is None:
        return None
    *fields, training_step, activation_params_json = row
    params = json.loads(activation_params_json) if activation_params_json is not None else None
    return TranscoderInfo(*fields, activation_params=params, training_step=training_step)
