"""Numbered schema migrations of the score database, applied in order when it is opened to write.

Each migration runs in its own transaction together with its row in ``schema_version``, so a
database is always at exactly one version. A migration, once shipped, never changes: a new schema
is a new number.

- 001: the first record stage (issue 4): one flat ``scores`` table, one row per score.
- 002: the normalised schema (issue 5): ``transcoders``, ``models``, ``prompts``, ``runs``,
  ``scores`` keyed by content-derived ids, and the views ``scores_wide``, ``latest_scores``,
  ``score_history``, ``transcoder_summary``. Every 001 row is carried over.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from tracerflow.errors import StorageError
from tracerflow.storage.records import canonical_json, params_hash, prompt_id, stable_id
from tracerflow.storage.stats import t975_macro_sql

Connection = duckdb.DuckDBPyConnection


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    apply: Callable[[Connection], None]


def _001_flat_scores(con: Connection) -> None:
    con.execute(
        """
        CREATE TABLE scores (
            flow_run_id VARCHAR NOT NULL,
            flow_name VARCHAR,
            suite_name VARCHAR,
            transcoder_source VARCHAR NOT NULL,
            transcoder_revision VARCHAR,
            transcoder_content_hash VARCHAR NOT NULL,
            transcoder_kind VARCHAR NOT NULL,
            model_name VARCHAR NOT NULL,
            prompt VARCHAR NOT NULL,
            n_tokens INTEGER,
            params_json VARCHAR NOT NULL,
            status VARCHAR NOT NULL,
            error VARCHAR,
            replacement_score DOUBLE,
            completeness_score DOUBLE,
            pruned_replacement_score DOUBLE,
            pruned_completeness_score DOUBLE,
            attribution_seconds DOUBLE,
            graph_path VARCHAR,
            slug VARCHAR,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (flow_run_id, transcoder_source, transcoder_content_hash, model_name,
                         prompt, params_json)
        )
        """
    )


# The four scores every summary reports, by column name.
SCORE_COLUMNS = (
    "replacement_score",
    "completeness_score",
    "pruned_replacement_score",
    "pruned_completeness_score",
)

_002_TABLES = """
CREATE TABLE transcoders (
    transcoder_id VARCHAR PRIMARY KEY, -- sha256("transcoder", source, commit_sha, content_hash)
    source VARCHAR NOT NULL,
    revision VARCHAR,
    commit_sha VARCHAR,
    content_hash VARCHAR NOT NULL,
    kind VARCHAR NOT NULL CHECK (kind IN ('clt', 'plt')),
    n_layers INTEGER,
    d_model INTEGER,
    d_features INTEGER,
    activation VARCHAR,
    activation_params_json VARCHAR,
    k INTEGER,                              -- TopK: features kept per layer and position
    threshold_mean DOUBLE                   -- JumpReLU: mean threshold, when the flow reports it
);
CREATE TABLE models (
    model_id VARCHAR PRIMARY KEY, -- sha256("model", name, n_layers, d_model, d_vocab, n_ctx)
    name VARCHAR NOT NULL,
    n_layers INTEGER,
    d_model INTEGER,
    d_vocab INTEGER,
    n_ctx INTEGER
);
CREATE TABLE prompts (
    prompt_id VARCHAR PRIMARY KEY,          -- sha256("prompt", text)
    text VARCHAR NOT NULL,
    n_tokens INTEGER                        -- as first tokenized; per-model counts are in scores
);
CREATE TABLE runs (
    flow_run_id VARCHAR PRIMARY KEY,        -- the Prefect flow run id
    flow_name VARCHAR,
    deployment_name VARCHAR,
    suite_name VARCHAR,
    started_at TIMESTAMP,                   -- all times UTC
    finished_at TIMESTAMP,
    status VARCHAR NOT NULL,
    tracerflow_version VARCHAR,
    circuit_tracer_version VARCHAR,
    torch_version VARCHAR,
    device VARCHAR,
    host VARCHAR,
    recorded_at TIMESTAMP NOT NULL
);
-- No FOREIGN KEYs: DuckDB cannot drop or rebuild a referenced table, which later migrations
-- need; record_run writes parents before children in the same transaction instead.
CREATE TABLE scores (
    score_id VARCHAR PRIMARY KEY, -- sha256("score", run, transcoder, model, prompt, params)
    flow_run_id VARCHAR NOT NULL,
    transcoder_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    prompt_id VARCHAR NOT NULL,
    params_hash VARCHAR NOT NULL,
    params_json VARCHAR NOT NULL,
    n_tokens INTEGER,
    status VARCHAR NOT NULL CHECK (status IN ('ok', 'failed')),
    error VARCHAR,
    replacement_score DOUBLE,
    completeness_score DOUBLE,
    pruned_replacement_score DOUBLE,
    pruned_completeness_score DOUBLE,
    n_active_features INTEGER,
    n_selected_features INTEGER,
    n_logits INTEGER,
    logit_cumulative_prob DOUBLE,
    n_pos INTEGER,
    phase_seconds_json VARCHAR,
    attribution_seconds DOUBLE,
    peak_memory_bytes BIGINT,
    graph_path VARCHAR,
    graph_files_path VARCHAR,
    slug VARCHAR,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (flow_run_id, transcoder_id, model_id, prompt_id, params_hash)
);
"""


def _summary_columns(score: str) -> str:
    short = score.removesuffix("_score")
    return f"""
        count({score}) AS {short}_n,
        avg({score}) AS {short}_mean,
        min({score}) AS {short}_min,
        max({score}) AS {short}_max,
        stddev_samp({score}) AS {short}_sd,
        avg({score}) - t975(count({score}) - 1) * stddev_samp({score}) / sqrt(count({score}))
            AS {short}_ci_low,
        avg({score}) + t975(count({score}) - 1) * stddev_samp({score}) / sqrt(count({score}))
            AS {short}_ci_high"""


_002_VIEWS = f"""
-- One wide row per score, with the names a person searches by.
CREATE VIEW scores_wide AS
SELECT
    s.*,
    t.source AS transcoder_source,
    t.revision AS transcoder_revision,
    t.commit_sha AS transcoder_commit_sha,
    t.content_hash AS transcoder_content_hash,
    t.kind AS transcoder_kind,
    m.name AS model_name,
    p.text AS prompt,
    r.flow_name,
    r.deployment_name,
    r.suite_name,
    r.started_at AS run_started_at,
    r.finished_at AS run_finished_at,
    r.status AS run_status,
    r.device,
    r.host
FROM scores s
JOIN transcoders t USING (transcoder_id)
JOIN models m USING (model_id)
JOIN prompts p USING (prompt_id)
JOIN runs r USING (flow_run_id);

-- The newest successful score per transcoder × model × prompt × parameter set.
-- Failures stay visible in scores and score_history; they do not hide the last good number.
CREATE VIEW latest_scores AS
SELECT * EXCLUDE (newest_first)
FROM (
    SELECT *, row_number() OVER (
        PARTITION BY transcoder_id, model_id, prompt_id, params_hash
        ORDER BY created_at DESC, flow_run_id DESC
    ) AS newest_first
    FROM scores_wide
    WHERE status = 'ok'
)
WHERE newest_first = 1;

-- Every score in time order per transcoder × model × prompt × parameter set, with the previous
-- successful score of the same series and the change since it.
CREATE VIEW score_history AS
SELECT
    *,
    replacement_score - previous_replacement_score AS replacement_change,
    completeness_score - previous_completeness_score AS completeness_change
FROM (
    SELECT
        flow_run_id, suite_name, deployment_name, run_started_at, created_at,
        transcoder_id, transcoder_source, transcoder_kind, model_id, model_name,
        prompt_id, prompt, params_hash, status, error,
        replacement_score, completeness_score,
        pruned_replacement_score, pruned_completeness_score,
        lag(replacement_score IGNORE NULLS) OVER series AS previous_replacement_score,
        lag(completeness_score IGNORE NULLS) OVER series AS previous_completeness_score,
        row_number() OVER series AS series_position
    FROM scores_wide
    WINDOW series AS (
        PARTITION BY transcoder_id, model_id, prompt_id, params_hash
        ORDER BY created_at, flow_run_id
    )
);

-- Per transcoder × model × parameter set, over the prompts it has a latest score on:
-- mean, min, max, sample sd, count and the 95% t interval of the mean of each score.
CREATE VIEW transcoder_summary AS
SELECT
    transcoder_id,
    any_value(transcoder_source) AS transcoder_source,
    any_value(transcoder_kind) AS transcoder_kind,
    model_name,
    params_hash,
    count(*) AS n_prompts,
    max(created_at) AS newest_score_at,
    {",".join(_summary_columns(score) for score in SCORE_COLUMNS)}
FROM latest_scores
GROUP BY transcoder_id, model_name, params_hash;
"""


def _002_normalised(con: Connection) -> None:
    con.execute("ALTER TABLE scores RENAME TO scores_001")
    con.execute(_002_TABLES)
    con.execute(t975_macro_sql())
    con.execute(_002_VIEWS)

    flat_rows = con.execute(
        """
        SELECT flow_run_id, flow_name, suite_name, transcoder_source, transcoder_revision,
               transcoder_content_hash, transcoder_kind, model_name, prompt, n_tokens,
               params_json, status, error, replacement_score, completeness_score,
               pruned_replacement_score, pruned_completeness_score, attribution_seconds,
               graph_path, slug, created_at
        FROM scores_001
        ORDER BY created_at
        """
    ).fetchall()
    columns = [d[0] for d in con.description]
    rows = [dict(zip(columns, row, strict=True)) for row in flat_rows]
    migrated_at = datetime.now(UTC).replace(tzinfo=None)

    # 001 kept no run table: a run started with its first score and ended with its last.
    runs: dict[str, dict] = {}
    for row in rows:
        run = runs.setdefault(
            row["flow_run_id"],
            {"flow_name": row["flow_name"], "suite_name": row["suite_name"], "times": []},
        )
        run["times"].append(row["created_at"])
    for run_id, run in runs.items():
        con.execute(
            """
            INSERT INTO runs (flow_run_id, flow_name, suite_name, started_at, finished_at, status,
                              recorded_at)
            VALUES (?, ?, ?, ?, ?, 'unknown', ?)
            """,
            [run_id, run["flow_name"], run["suite_name"], min(run["times"]), max(run["times"]),
             migrated_at],
        )  # fmt: skip

    for row in rows:
        # 001 knew no commit sha and no model shape: those fields are NULL and in the ids.
        transcoder_id = stable_id(
            "transcoder", row["transcoder_source"], None, row["transcoder_content_hash"]
        )
        model_id = stable_id("model", row["model_name"], None, None, None, None)
        params = json.loads(row["params_json"])
        con.execute(
            """
            INSERT INTO transcoders (transcoder_id, source, revision, content_hash, kind)
            VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING
            """,
            [transcoder_id, row["transcoder_source"], row["transcoder_revision"],
             row["transcoder_content_hash"], row["transcoder_kind"]],
        )  # fmt: skip
        con.execute(
            "INSERT INTO models (model_id, name) VALUES (?, ?) ON CONFLICT DO NOTHING",
            [model_id, row["model_name"]],
        )
        con.execute(
            "INSERT INTO prompts (prompt_id, text, n_tokens) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING",
            [prompt_id(row["prompt"]), row["prompt"], row["n_tokens"]],
        )
        key = (row["flow_run_id"], transcoder_id, model_id, prompt_id(row["prompt"]))
        con.execute(
            """
            INSERT INTO scores (score_id, flow_run_id, transcoder_id, model_id, prompt_id,
                                params_hash, params_json, n_tokens, status, error,
                                replacement_score, completeness_score, pruned_replacement_score,
                                pruned_completeness_score, attribution_seconds, graph_path, slug,
                                created_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            [stable_id("score", *key, params_hash(params)), *key, params_hash(params),
             canonical_json(params), row["n_tokens"], row["status"], row["error"],
             row["replacement_score"], row["completeness_score"],
             row["pruned_replacement_score"], row["pruned_completeness_score"],
             row["attribution_seconds"], row["graph_path"], row["slug"], row["created_at"]],
        )  # fmt: skip
    con.execute("DROP TABLE scores_001")


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "flat scores table (issue 4)", _001_flat_scores),
    Migration(2, "normalised schema with ids and views (issue 5)", _002_normalised),
)
CURRENT_VERSION = MIGRATIONS[-1].version


def schema_version(con: Connection) -> int:
    """The highest migration applied to this database; 0 for a new, empty file."""
    has_table = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_version' AND table_schema = 'main'"
    ).fetchone()
    if not has_table or has_table[0] == 0:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def apply_migrations(con: Connection, up_to: int | None = None) -> list[int]:
    """Apply every migration above the database's version (up to ``up_to``); return those applied.

    Each migration commits on its own; one that fails rolls back whole and raises StorageError,
    leaving the database at the previous version.
    """
    target = CURRENT_VERSION if up_to is None else up_to
    current = schema_version(con)
    if current > CURRENT_VERSION:
        raise StorageError(
            f"the score database is at schema version {current}, newer than this tracerflow "
            f"knows ({CURRENT_VERSION}); upgrade tracerflow to use it"
        )
    applied: list[int] = []
    for migration in MIGRATIONS:
        if migration.version <= current or migration.version > target:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                "version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL)"
            )
            migration.apply(con)
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                [migration.version, migration.name, datetime.now(UTC).replace(tzinfo=None)],
            )
            con.execute("COMMIT")
        except Exception as error:
            con.execute("ROLLBACK")
            raise StorageError(
                f"schema migration {migration.version:03d} ({migration.name}) failed and was "
                f"rolled back, the database is unchanged: {error}"
            ) from error
        applied.append(migration.version)
    return applied
