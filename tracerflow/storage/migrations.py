"""Numbered schema migrations of the score database, applied in order when it is opened to write.

Each migration is literal SQL text that reads no Python constant or id function (tests pin the
sha256 of each text) and runs in one transaction with its ``schema_version`` row. A shipped
migration never changes; a new schema is a new number. What each one did: docs/database.md
("Migrations").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from tracerflow.errors import StorageError

Connection = duckdb.DuckDBPyConnection


# Looked up by name (``migration_named``), never by number: numbers are given at merge.
TRAINING_STEP_MIGRATION = "the training step of each checkpoint (issue 28 part 2)"
WRITERS_LOCK_MIGRATION = "a lake's writers all take the writers' lock (issue 27 part 2)"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


MIGRATION_001 = """
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
);
"""

MIGRATION_002 = """
ALTER TABLE scores RENAME TO scores_001;

CREATE TABLE transcoders (
    transcoder_id VARCHAR PRIMARY KEY,
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
    model_id VARCHAR PRIMARY KEY,
    name VARCHAR NOT NULL,
    n_layers INTEGER,
    d_model INTEGER,
    d_vocab INTEGER,
    n_ctx INTEGER
);
CREATE TABLE prompts (
    prompt_id VARCHAR PRIMARY KEY,
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
    score_id VARCHAR PRIMARY KEY,
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

-- t(0.975, df): a table for df 1-30, the Cornish-Fisher expansion above (error < 4e-8).
CREATE OR REPLACE MACRO t975(df) AS CASE WHEN df IS NULL OR df < 1 THEN NULL WHEN df <= 30 THEN [
    12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243, 2.3060041,
    2.2621572, 2.2281389, 2.2009852, 2.1788128, 2.1603687, 2.1447867, 2.1314495, 2.1199053,
    2.1098156, 2.100922, 2.0930241, 2.0859634, 2.0796138, 2.0738731, 2.0686576, 2.0638986,
    2.0595386, 2.0555294, 2.0518305, 2.0484071, 2.0452296, 2.0422725][df::INTEGER]
    ELSE 1.959963984540054 + 2.372271230298562 / pow(df::DOUBLE, 1)
        + 2.8224986157396112 / pow(df::DOUBLE, 2) + 2.555849679507722 / pow(df::DOUBLE, 3)
        + 1.5895340533938225 / pow(df::DOUBLE, 4) END;

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
    count(replacement_score) AS replacement_n,
    avg(replacement_score) AS replacement_mean,
    min(replacement_score) AS replacement_min,
    max(replacement_score) AS replacement_max,
    stddev_samp(replacement_score) AS replacement_sd,
    avg(replacement_score)
        - t975(count(replacement_score) - 1) * stddev_samp(replacement_score)
        / sqrt(count(replacement_score)) AS replacement_ci_low,
    avg(replacement_score)
        + t975(count(replacement_score) - 1) * stddev_samp(replacement_score)
        / sqrt(count(replacement_score)) AS replacement_ci_high,
    count(completeness_score) AS completeness_n,
    avg(completeness_score) AS completeness_mean,
    min(completeness_score) AS completeness_min,
    max(completeness_score) AS completeness_max,
    stddev_samp(completeness_score) AS completeness_sd,
    avg(completeness_score)
        - t975(count(completeness_score) - 1) * stddev_samp(completeness_score)
        / sqrt(count(completeness_score)) AS completeness_ci_low,
    avg(completeness_score)
        + t975(count(completeness_score) - 1) * stddev_samp(completeness_score)
        / sqrt(count(completeness_score)) AS completeness_ci_high,
    count(pruned_replacement_score) AS pruned_replacement_n,
    avg(pruned_replacement_score) AS pruned_replacement_mean,
    min(pruned_replacement_score) AS pruned_replacement_min,
    max(pruned_replacement_score) AS pruned_replacement_max,
    stddev_samp(pruned_replacement_score) AS pruned_replacement_sd,
    avg(pruned_replacement_score)
        - t975(count(pruned_replacement_score) - 1) * stddev_samp(pruned_replacement_score)
        / sqrt(count(pruned_replacement_score)) AS pruned_replacement_ci_low,
    avg(pruned_replacement_score)
        + t975(count(pruned_replacement_score) - 1) * stddev_samp(pruned_replacement_score)
        / sqrt(count(pruned_replacement_score)) AS pruned_replacement_ci_high,
    count(pruned_completeness_score) AS pruned_completeness_n,
    avg(pruned_completeness_score) AS pruned_completeness_mean,
    min(pruned_completeness_score) AS pruned_completeness_min,
    max(pruned_completeness_score) AS pruned_completeness_max,
    stddev_samp(pruned_completeness_score) AS pruned_completeness_sd,
    avg(pruned_completeness_score)
        - t975(count(pruned_completeness_score) - 1) * stddev_samp(pruned_completeness_score)
        / sqrt(count(pruned_completeness_score)) AS pruned_completeness_ci_low,
    avg(pruned_completeness_score)
        + t975(count(pruned_completeness_score) - 1) * stddev_samp(pruned_completeness_score)
        / sqrt(count(pruned_completeness_score)) AS pruned_completeness_ci_high
FROM latest_scores
GROUP BY transcoder_id, model_name, params_hash;

-- Carry every 001 row over. 001 knew no commit sha, model shape, versions or statistics:
-- those are NULL. A run started with its first score and ended with its last.
CREATE TEMP MACRO tf_id_field(x) AS CASE WHEN x IS NULL THEN 'NULL' ELSE strlen(x) || ':' || x END;
CREATE TEMP MACRO tf_canonical_params(params_json) AS to_json(map_from_entries(list_sort(
    map_entries(json_transform(params_json, '"MAP(VARCHAR, JSON)"')))))::VARCHAR;
CREATE TEMP TABLE flat AS
SELECT
    *,
    sha256('transcoder|' || tf_id_field(transcoder_source) || '|'
           || tf_id_field(transcoder_content_hash)) AS transcoder_id,
    sha256('model|' || tf_id_field(model_name)) AS model_id,
    sha256('prompt|' || tf_id_field(prompt)) AS prompt_id,
    tf_canonical_params(params_json) AS canonical_params_json,
    sha256('params|' || tf_id_field(tf_canonical_params(params_json))) AS params_hash
FROM scores_001;

INSERT INTO runs (flow_run_id, flow_name, suite_name, started_at, finished_at, status,
                  recorded_at)
SELECT flow_run_id, arg_min(flow_name, created_at), arg_min(suite_name, created_at),
       min(created_at), max(created_at), 'unknown', get_current_timestamp() AT TIME ZONE 'UTC'
FROM flat
GROUP BY flow_run_id;

INSERT INTO transcoders (transcoder_id, source, revision, content_hash, kind)
SELECT transcoder_id, any_value(transcoder_source), arg_min(transcoder_revision, created_at),
       any_value(transcoder_content_hash), arg_min(transcoder_kind, created_at)
FROM flat
GROUP BY transcoder_id;

INSERT INTO models (model_id, name)
SELECT model_id, any_value(model_name) FROM flat GROUP BY model_id;

INSERT INTO prompts (prompt_id, text, n_tokens)
SELECT prompt_id, any_value(prompt), arg_min(n_tokens, created_at) FROM flat GROUP BY prompt_id;

INSERT INTO scores (score_id, flow_run_id, transcoder_id, model_id, prompt_id, params_hash,
                    params_json, n_tokens, status, error, replacement_score, completeness_score,
                    pruned_replacement_score, pruned_completeness_score, attribution_seconds,
                    graph_path, slug, created_at)
SELECT sha256('score|' || tf_id_field(flow_run_id) || '|' || tf_id_field(transcoder_id) || '|'
              || tf_id_field(model_id) || '|' || tf_id_field(prompt_id) || '|'
              || tf_id_field(params_hash)),
       flow_run_id, transcoder_id, model_id, prompt_id, params_hash, canonical_params_json,
       n_tokens, status, error, replacement_score, completeness_score, pruned_replacement_score,
       pruned_completeness_score, attribution_seconds, graph_path, slug, created_at
FROM flat;

DROP TABLE flat;
DROP TABLE scores_001;
DROP MACRO tf_canonical_params;
DROP MACRO tf_id_field;
"""

MIGRATION_003 = """
-- Ids from the fields every version recorded: a transcoder is its source and the hash of its
-- converted weights (no commit sha: 001 did not know it, and the weights are what matter), a
-- model its name (no shape: 001 did not know it). The shape, commit and revision stay columns,
-- as first recorded. Placeholders the flow wrote for facts it did not know (kind 'clt', content
-- hash 'unknown' or the snapshot's, activation 'unknown', shapes and token counts 0) become NULL.
CREATE TEMP MACRO tf_id_field(x) AS CASE WHEN x IS NULL THEN 'NULL' ELSE strlen(x) || ':' || x END;

CREATE TEMP TABLE transcoder_ids AS
SELECT
    t.transcoder_id AS old_id,
    sha256('transcoder|' || tf_id_field(t.source) || '|' || tf_id_field(
        CASE WHEN t.activation IS NOT DISTINCT FROM 'unknown' THEN NULL ELSE t.content_hash END
    )) AS new_id,
    coalesce((SELECT min(s.created_at) FROM scores s WHERE s.transcoder_id = t.transcoder_id),
             'infinity'::TIMESTAMP) AS first_seen,
    t.activation IS NOT DISTINCT FROM 'unknown' AS placeholder,
    t.*
FROM transcoders t;

CREATE TEMP TABLE model_ids AS
SELECT
    m.model_id AS old_id,
    sha256('model|' || tf_id_field(m.name)) AS new_id,
    coalesce((SELECT min(s.created_at) FROM scores s WHERE s.model_id = m.model_id),
             'infinity'::TIMESTAMP) AS first_seen,
    m.*
FROM models m;

CREATE TEMP TABLE prompt_ids AS
SELECT p.prompt_id AS old_id, sha256('prompt|' || tf_id_field(p.text)) AS new_id, p.*
FROM prompts p;

CREATE TABLE transcoders_003 (
    transcoder_id VARCHAR PRIMARY KEY,      -- id('transcoder', source, content_hash)
    source VARCHAR NOT NULL,
    revision VARCHAR,                       -- as first recorded
    commit_sha VARCHAR,                     -- as first recorded
    content_hash VARCHAR,                   -- NULL: it failed before it was ever converted
    kind VARCHAR CHECK (kind IN ('clt', 'plt')),
    n_layers INTEGER,
    d_model INTEGER,
    d_features INTEGER,
    activation VARCHAR,
    activation_params_json VARCHAR,
    k INTEGER,                              -- TopK: features kept per layer and position
    threshold_mean DOUBLE                   -- JumpReLU: mean threshold, when the flow reports it
);
INSERT INTO transcoders_003
SELECT
    new_id,
    any_value(source),
    arg_min(revision, first_seen),
    arg_min(commit_sha, first_seen),
    any_value(CASE WHEN placeholder THEN NULL ELSE content_hash END),
    arg_min(kind, first_seen) FILTER (WHERE NOT placeholder),
    arg_min(nullif(n_layers, 0), first_seen),
    arg_min(nullif(d_model, 0), first_seen),
    arg_min(nullif(d_features, 0), first_seen),
    arg_min(activation, first_seen) FILTER (WHERE NOT placeholder),
    arg_min(activation_params_json, first_seen) FILTER (WHERE NOT placeholder),
    arg_min(k, first_seen),
    arg_min(threshold_mean, first_seen)
FROM transcoder_ids
GROUP BY new_id;

CREATE TABLE models_003 (
    model_id VARCHAR PRIMARY KEY,           -- id('model', name)
    name VARCHAR NOT NULL,
    n_layers INTEGER,                       -- the shape, as first recorded
    d_model INTEGER,
    d_vocab INTEGER,
    n_ctx INTEGER
);
INSERT INTO models_003
SELECT new_id, any_value(name), arg_min(nullif(n_layers, 0), first_seen),
       arg_min(nullif(d_model, 0), first_seen), arg_min(nullif(d_vocab, 0), first_seen),
       arg_min(nullif(n_ctx, 0), first_seen)
FROM model_ids
GROUP BY new_id;

CREATE TABLE prompts_003 (
    prompt_id VARCHAR PRIMARY KEY,          -- id('prompt', text)
    text VARCHAR NOT NULL,
    n_tokens INTEGER                        -- as first tokenized; per-model counts are in scores
);
INSERT INTO prompts_003 SELECT new_id, text, nullif(n_tokens, 0) FROM prompt_ids;

CREATE TABLE scores_003 (
    score_id VARCHAR PRIMARY KEY,           -- id('score', run, transcoder, model, prompt, params)
    flow_run_id VARCHAR NOT NULL,
    transcoder_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    prompt_id VARCHAR NOT NULL,
    params_hash VARCHAR NOT NULL,           -- id('params', params_json)
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
    attribution_threads INTEGER,            -- torch's intra-op threads; NULL before 003
    graph_path VARCHAR,
    graph_files_path VARCHAR,
    slug VARCHAR,
    created_at TIMESTAMP NOT NULL,
    UNIQUE (flow_run_id, transcoder_id, model_id, prompt_id, params_hash)
);
INSERT INTO scores_003
SELECT
    sha256('score|' || tf_id_field(s.flow_run_id) || '|' || tf_id_field(t.new_id) || '|'
           || tf_id_field(m.new_id) || '|' || tf_id_field(p.new_id) || '|'
           || tf_id_field(sha256('params|' || tf_id_field(s.params_json)))),
    s.flow_run_id, t.new_id, m.new_id, p.new_id,
    sha256('params|' || tf_id_field(s.params_json)),
    s.params_json, nullif(s.n_tokens, 0), s.status, s.error, s.replacement_score,
    s.completeness_score, s.pruned_replacement_score, s.pruned_completeness_score,
    s.n_active_features, s.n_selected_features, s.n_logits, s.logit_cumulative_prob, s.n_pos,
    s.phase_seconds_json, s.attribution_seconds, s.peak_memory_bytes, NULL, s.graph_path,
    s.graph_files_path, s.slug, s.created_at
FROM scores s
JOIN transcoder_ids t ON t.old_id = s.transcoder_id
JOIN model_ids m ON m.old_id = s.model_id
JOIN prompt_ids p ON p.old_id = s.prompt_id;

-- Every score has its parents (the writer inserts them first): refuse to lose one if not.
SELECT CASE WHEN (SELECT count(*) FROM scores) <> (SELECT count(*) FROM scores_003)
       THEN error('a score row has no transcoder, model or prompt row; nothing was migrated')
       END;

DROP TABLE scores;
DROP TABLE prompts;
DROP TABLE models;
DROP TABLE transcoders;
ALTER TABLE transcoders_003 RENAME TO transcoders;
ALTER TABLE models_003 RENAME TO models;
ALTER TABLE prompts_003 RENAME TO prompts;
ALTER TABLE scores_003 RENAME TO scores;
DROP TABLE transcoder_ids;
DROP TABLE model_ids;
DROP TABLE prompt_ids;
DROP MACRO tf_id_field;
"""

MIGRATION_004 = """
-- Transcoder quality metrics (the evaluate stage, docs/metrics.md): per run x transcoder x
-- model x evaluation corpus, one row per layer and one for all layers (layer NULL). The
-- whole-model columns (kl ... n_predictions) are on the all-layers row only.
CREATE TABLE transcoder_metrics (
    metrics_id VARCHAR PRIMARY KEY,         -- id('metrics', run, transcoder, model, corpus, layer)
    flow_run_id VARCHAR NOT NULL,
    transcoder_id VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,
    corpus_name VARCHAR NOT NULL,           -- the corpus file, or 'prompts' (the run's prompts)
    corpus_hash VARCHAR NOT NULL,           -- sha256 of the windowed tokens: equal hashes pair
    corpus_n_tokens INTEGER NOT NULL,       -- text tokens evaluated (BOS not counted)
    corpus_n_windows INTEGER NOT NULL,
    metrics_version VARCHAR NOT NULL,
    layer INTEGER,                          -- NULL: all layers
    n_features INTEGER NOT NULL,
    fvu DOUBLE,                             -- pooled over layers on the all-layers row
    mse DOUBLE,                             -- summed over layers on the all-layers row
    l0 DOUBLE,                              -- summed over layers on the all-layers row
    dead_share DOUBLE,
    dense_1pct_share DOUBLE,
    dense_10pct_share DOUBLE,
    density_histogram_json VARCHAR,         -- live features per log10-density bin (-7 .. 0)
    kl DOUBLE,
    top1_agreement DOUBLE,
    ce_original DOUBLE,
    ce_replacement DOUBLE,
    ce_ablated DOUBLE,
    ce_loss_recovered DOUBLE,
    n_predictions INTEGER,
    evaluate_key VARCHAR NOT NULL,          -- artifacts/evaluate/<key>: the per-token values
    evaluation_seconds DOUBLE,
    created_at TIMESTAMP NOT NULL
);

-- One wide row per metrics row, with the names a person searches by.
CREATE VIEW transcoder_metrics_wide AS
SELECT
    x.*,
    t.source AS transcoder_source,
    t.content_hash AS transcoder_content_hash,
    t.kind AS transcoder_kind,
    m.name AS model_name,
    r.flow_name,
    r.deployment_name,
    r.suite_name,
    r.started_at AS run_started_at,
    r.status AS run_status
FROM transcoder_metrics x
JOIN transcoders t USING (transcoder_id)
JOIN models m USING (model_id)
JOIN runs r USING (flow_run_id);

-- The newest metrics per transcoder x model x evaluation corpus x layer.
CREATE VIEW latest_transcoder_metrics AS
SELECT * EXCLUDE (newest_first)
FROM (
    SELECT *, row_number() OVER (
        PARTITION BY transcoder_id, model_id, corpus_hash, layer
        ORDER BY created_at DESC, flow_run_id DESC
    ) AS newest_first
    FROM transcoder_metrics_wide
)
WHERE newest_first = 1;

-- Every metrics row in time order per transcoder x model x corpus x layer, with the change
-- since the previous run of the same series.
CREATE VIEW transcoder_metrics_history AS
SELECT
    *,
    fvu - lag(fvu) OVER series AS fvu_change,
    l0 - lag(l0) OVER series AS l0_change,
    kl - lag(kl) OVER series AS kl_change,
    ce_loss_recovered - lag(ce_loss_recovered) OVER series AS ce_loss_recovered_change
FROM transcoder_metrics_wide
WINDOW series AS (
    PARTITION BY transcoder_id, model_id, corpus_hash, layer
    ORDER BY created_at, flow_run_id
);

-- transcoder_summary (graph scores over prompts) beside the newest all-layers metrics of the
-- same transcoder and model, one row per evaluation corpus (none: metrics columns NULL).
CREATE VIEW transcoder_quality AS
SELECT
    s.*,
    q.corpus_name,
    q.corpus_hash,
    q.corpus_n_tokens,
    q.metrics_version,
    q.fvu,
    q.mse,
    q.l0,
    q.dead_share,
    q.dense_1pct_share,
    q.dense_10pct_share,
    q.kl,
    q.top1_agreement,
    q.ce_loss_recovered,
    q.created_at AS metrics_at
FROM transcoder_summary s
LEFT JOIN latest_transcoder_metrics q
    ON q.transcoder_id = s.transcoder_id AND q.model_name = s.model_name AND q.layer IS NULL;
"""

MIGRATION_005 = """
-- Which attribution computed a score's graph (issue 17): 'fast' (tracerflow's explicit
-- backward) or 'circuit-tracer' (its own attribute: the default on CUDA until the fast path is
-- validated there, and wherever the fast path does not cover the model). NULL before 005 and
-- for an item whose attribution never ran.
ALTER TABLE scores ADD COLUMN attribution_path VARCHAR;
"""

MIGRATION_006 = """
-- Which format the transcoder's files were read as (issue 25): 'crosslayer-transcoder',
-- 'crosslayer-transcoder-lightning' or 'circuit-tracer'. NULL before 006 and for an item whose
-- transcoder was never read.
ALTER TABLE scores ADD COLUMN transcoder_format VARCHAR;
"""

MIGRATION_007 = """
-- The commit sha of each Hub file a transcoder was read from besides its source's own repo
-- (issue 25: a circuit-tracer Hub config's `transcoders` list of hf://org/repo/path?revision=
-- files): a JSON object, hf:// URI -> commit sha. The source's own commit stays
-- transcoders.commit_sha. NULL before 007 and for transcoders that name no such files.
ALTER TABLE scores ADD COLUMN transcoder_file_commits_json VARCHAR;
"""

MIGRATION_008 = """
-- Subgraph scores (issue 28): a set of pinned nodes of one exported graph (the viewer's Save, or
-- `tracerflow subgraph score`), scored with the pruned scores' rule, kept = the pinned features
-- (docs/metrics.md, "Subgraph scores"). One row per score row x pinned set.
CREATE TABLE subgraphs (
    subgraph_id VARCHAR PRIMARY KEY,        -- id('subgraph', score_id, pinned_ids_json)
    score_id VARCHAR NOT NULL,              -- the score row whose graph was scored
    slug VARCHAR NOT NULL,                  -- the viewer's graph slug
    pinned_ids_json VARCHAR NOT NULL,       -- sorted JSON list of the pinned node ids
    supernodes_json VARCHAR,                -- the saved supernodes ([label, id, ...] lists)
    n_pinned_features INTEGER NOT NULL,     -- pinned ids that are features (the kept ones)
    n_selected_features INTEGER NOT NULL,
    graph_replacement_score DOUBLE NOT NULL,     -- the whole graph, recomputed from its file
    graph_completeness_score DOUBLE NOT NULL,
    subgraph_replacement_score DOUBLE NOT NULL,  -- non-pinned features merged into error
    subgraph_completeness_score DOUBLE NOT NULL,
    scored_by VARCHAR NOT NULL,             -- 'cli' or 'viewer'
    created_at TIMESTAMP NOT NULL
);

-- Each subgraph beside its graph's score row (transcoder, model, prompt, run, pruned scores).
CREATE VIEW subgraphs_wide AS
SELECT
    g.*,
    s.transcoder_source,
    s.model_name,
    s.prompt,
    s.flow_run_id,
    s.suite_name,
    s.params_hash,
    s.replacement_score,
    s.completeness_score,
    s.pruned_replacement_score,
    s.pruned_completeness_score
FROM subgraphs g
JOIN scores_wide s USING (score_id);
"""

MIGRATION_009 = """
-- The training step of a checkpoint scored as one of a training run's (issue 28): from its
-- folder's name (step=500, step-500, checkpoint-500) or its checkpoint (a Lightning checkpoint's
-- global_step, a config.yaml's global_step). A fact of the transcoder (its folder and weights),
-- so on its row; NULL before this migration and for a transcoder whose step is not known.
ALTER TABLE transcoders ADD COLUMN training_step BIGINT;
"""

MIGRATION_010 = """
-- Issue 26. (1) Paths relative to their roots (storage/paths.py): a row's graph_path is stored
-- relative to the artifact root and its graph_files_path relative to the home; the views give
-- them absolute, under the roots the reading connection sets as the variables tracerflow_home
-- and tracerflow_artifact_root (a bare session: the database file's own folder and its
-- artifacts/). Absolute paths are read as they are; those under the migrating connection's roots
-- become relative here. (2) A transcoder's history follows its source across weight changes:
-- score_history's series are per source (not per source and weights), with the weights' version
-- (the first 8 hex digits of their hash, as in graph slugs) and whether it changed since the
-- series' previous row.
CREATE OR REPLACE MACRO tf_home() AS coalesce(
    getvariable('tracerflow_home'),
    (SELECT CASE WHEN contains(path, '/') THEN regexp_replace(path, '/[^/]*$', '') ELSE '.' END
     FROM duckdb_databases() WHERE database_name = current_database() AND type = 'duckdb'));

CREATE OR REPLACE MACRO tf_artifact_root() AS coalesce(
    getvariable('tracerflow_artifact_root'),
    (SELECT CASE WHEN contains(path, '/') THEN regexp_replace(path, '/[^/]*$', '') ELSE '.' END
     || '/artifacts'
     FROM duckdb_databases() WHERE database_name = current_database() AND type = 'duckdb'));

-- A stored path read back: absolute as it is, relative under root (relative still, no root).
CREATE OR REPLACE MACRO tf_resolved(root, stored) AS CASE
    WHEN stored IS NULL OR starts_with(stored, '/') THEN stored
    ELSE coalesce(root || '/', '') || stored END;

-- A path as stored: relative to root when under it, as it is otherwise.
CREATE OR REPLACE MACRO tf_relative(root, path) AS CASE
    WHEN root IS NOT NULL AND starts_with(path, root || '/') THEN substr(path, length(root) + 2)
    ELSE path END;

UPDATE scores SET graph_path = tf_relative(tf_artifact_root(), graph_path)
WHERE starts_with(graph_path, tf_artifact_root() || '/');

UPDATE scores SET graph_files_path = tf_relative(tf_home(), graph_files_path)
WHERE starts_with(graph_files_path, tf_home() || '/');

-- The joins stay as 002 wrote them, under a new name; scores_wide reads through them.
ALTER VIEW scores_wide RENAME TO scores_joined;

CREATE VIEW scores_wide AS
SELECT
    * REPLACE (
        tf_resolved(tf_artifact_root(), graph_path) AS graph_path,
        tf_resolved(tf_home(), graph_files_path) AS graph_files_path),
    left(transcoder_content_hash, 8) AS transcoder_version
FROM scores_joined;

-- Every score (all of scores_wide) in time order per transcoder source x model x prompt x
-- parameter set, across the source's weight changes: the previous successful score of the
-- series, the change since it, and whether the weights changed since the series' previous row.
CREATE OR REPLACE VIEW score_history AS
WITH in_series AS (
    SELECT
        *,
        lag(replacement_score IGNORE NULLS) OVER series AS previous_replacement_score,
        lag(completeness_score IGNORE NULLS) OVER series AS previous_completeness_score,
        lag(transcoder_version IGNORE NULLS) OVER series AS previous_transcoder_version,
        row_number() OVER series AS series_position
    FROM scores_wide
    WINDOW series AS (
        PARTITION BY transcoder_source, model_id, prompt_id, params_hash
        ORDER BY created_at, flow_run_id)
)
SELECT
    * EXCLUDE (previous_transcoder_version),
    replacement_score - previous_replacement_score AS replacement_change,
    completeness_score - previous_completeness_score AS completeness_change,
    coalesce(transcoder_version <> previous_transcoder_version, false) AS version_changed
FROM in_series;
"""

MIGRATION_011 = """
-- Issue 27 part 2: no table or row changes. From this version on, every tracerflow that writes
-- a lake takes the writers' lock (a PostgreSQL advisory lock on the catalog's database) and
-- nothing else; before it, writers also rewrote the lake's one-row table lake_writes, so that a
-- writer taking no lock (an older tracerflow) conflicted instead of landing a row twice. Every
-- tracerflow refuses a store at a newer version than it knows, so a lake at this version is
-- written only by lock takers: the migration of a lake to it drops lake_writes (any write of
-- an older tracerflow still under way then fails, writing nothing), and writers stop rewriting
-- it. The embedded file, which never had lake_writes, changes only its version.
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "flat scores table (issue 4)", MIGRATION_001),
    Migration(2, "normalised schema with ids and views (issue 5)", MIGRATION_002),
    Migration(
        3, "ids that continue across migrations, attribution_threads (issue 11)", MIGRATION_003
    ),
    Migration(4, "transcoder quality metrics (issue 15)", MIGRATION_004),
    Migration(5, "which attribution path computed each graph (issue 17)", MIGRATION_005),
    Migration(6, "which format each transcoder was read as (issue 25)", MIGRATION_006),
    Migration(
        7, "the commits of the Hub files a transcoder was read from (issue 25)", MIGRATION_007
    ),
    Migration(8, "subgraph scores of pinned node sets (issue 28 part 1)", MIGRATION_008),
    Migration(9, TRAINING_STEP_MIGRATION, MIGRATION_009),
    Migration(
        10,
        "paths relative to their roots; history across weight changes (issue 26, parts 4 and 8)",
        MIGRATION_010,
    ),
    Migration(11, WRITERS_LOCK_MIGRATION, MIGRATION_011),
)
CURRENT_VERSION = MIGRATIONS[-1].version


def migration_named(name: str) -> Migration:
    """The migration called ``name``: code that needs a schema feature asks for its migration by
    name, so renumbering migrations changes nothing else."""
    return next(migration for migration in MIGRATIONS if migration.name == name)


def schema_version(con: Connection) -> int:
    """The highest migration applied to this database; 0 for a new, empty file."""
    has_table = con.execute(
        "SELECT count(*) FROM information_schema.tables "
        "WHERE table_name = 'schema_version' AND table_schema = 'main' "
        "AND table_catalog = current_database()"
    ).fetchone()
    if not has_table or has_table[0] == 0:
        return 0
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def foreign_tables(con: Connection) -> list[str]:
    """The tables of a database that is not tracerflow's, sorted; none for an empty database or
    one tracerflow wrote (a ``schema_version`` table of tracerflow's columns beside ``scores``).
    tracerflow writes its tables into an empty database only, never beside another
    application's."""
    tables = sorted(
        str(name)
        for (name,) in con.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'main' AND table_catalog = current_database()"
        ).fetchall()
    )
    if not tables:
        return []
    columns = {
        str(name)
        for (name,) in con.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = "
            "'schema_version' AND table_schema = 'main' AND table_catalog = current_database()"
        ).fetchall()
    }
    if columns == {"version", "name", "applied_at"} and "scores" in tables:
        return []
    return tables


def refuse_foreign(con: Connection, where: object) -> None:
    """``StorageError`` (exit 2) when ``con`` is another application's database (``where``
    names it): tracerflow neither migrates nor reads it."""
    foreign = foreign_tables(con)
    if foreign:
        shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise StorageError(
            f"{where} is not a tracerflow score database (it holds other tables: {shown}); "
            "tracerflow writes into its own databases or a new file only: point --store "
            "(TRACERFLOW_STORE) at one"
        )


def apply_migrations(con: Connection, up_to: int | None = None) -> list[int]:
    """Apply every migration above the database's version (up to ``up_to``); return those applied.

    Each migration commits on its own; one that fails rolls back whole and raises StorageError,
    leaving the database at the previous version. Callers that write hold the writer lock
    (``database._write_lock``) around this.
    """
    target = CURRENT_VERSION if up_to is None else up_to
    refuse_foreign(con, "the database")
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
            con.execute(migration.sql)
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
