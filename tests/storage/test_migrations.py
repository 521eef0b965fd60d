"""Migrations: numbered, literal, applied at open, transactional; 001 → 002 → 003 loses no row
and keeps every history series going."""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pytest

from tracerflow.errors import StorageError
from tracerflow.storage import (
    ModelInfo,
    RunInfo,
    TranscoderInfo,
    history,
    open_database,
    record_run,
)
from tracerflow.storage.migrations import (
    CURRENT_VERSION,
    MIGRATIONS,
    TRAINING_STEP_MIGRATION,
    apply_migrations,
    migration_named,
    schema_version,
)
from tracerflow.storage.records import params_hash, prompt_id, stable_id

from .builders import score

# The 001 schema as the issue-4 record stage created it: literal SQL, a copy that does not move
# when tracerflow's migration code does.
FLAT_SCHEMA_001 = """
CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY, name VARCHAR NOT NULL, applied_at TIMESTAMP NOT NULL);
INSERT INTO schema_version VALUES (1, 'flat scores table (issue 4)', TIMESTAMP '2025-05-01');
CREATE TABLE scores (
    flow_run_id VARCHAR NOT NULL, flow_name VARCHAR, suite_name VARCHAR,
    transcoder_source VARCHAR NOT NULL, transcoder_revision VARCHAR,
    transcoder_content_hash VARCHAR NOT NULL, transcoder_kind VARCHAR NOT NULL,
    model_name VARCHAR NOT NULL, prompt VARCHAR NOT NULL, n_tokens INTEGER,
    params_json VARCHAR NOT NULL, status VARCHAR NOT NULL, error VARCHAR,
    replacement_score DOUBLE, completeness_score DOUBLE, pruned_replacement_score DOUBLE,
    pruned_completeness_score DOUBLE, attribution_seconds DOUBLE, graph_path VARCHAR,
    slug VARCHAR, created_at TIMESTAMP NOT NULL,
    PRIMARY KEY (flow_run_id, transcoder_source, transcoder_content_hash, model_name, prompt,
                 params_json));
"""
# Rows as the issue-4 record stage wrote them into the flat 001 table.
FLAT_COLUMNS = (
    "flow_run_id", "flow_name", "suite_name", "transcoder_source", "transcoder_revision",
    "transcoder_content_hash", "transcoder_kind", "model_name", "prompt", "n_tokens",
    "params_json", "status", "error", "replacement_score", "completeness_score",
    "pruned_replacement_score", "pruned_completeness_score", "attribution_seconds",
    "graph_path", "slug", "created_at",
)  # fmt: skip
PARAMS = json.dumps({"max_n_logits": 10, "desired_logit_prob": 0.95, "batch_size": 256})
FLAT_ROWS = [
    ("run-a", "score-one", None, "georglange/crosslayer-transcoder-topk-16k", "main", "h-clt",
     "clt", "gpt2", "Mary and John went to the store, Jon gave a drink to", 15, PARAMS, "ok",
     None, 0.7059, 0.9124, 0.65, 0.88, 49.0, "/a/graph.pt", "clt-ioi",
     datetime(2025, 5, 1, 10, 0)),
    ("run-a", "score-one", None, "georglange/crosslayer-transcoder-topk-plt-16k", "main",
     "h-plt", "plt", "gpt2", "Mary and John went to the store, Jon gave a drink to", 15, PARAMS,
     "ok", None, 0.7082, 0.9168, 0.66, 0.89, 28.0, "/b/graph.pt", "plt-ioi",
     datetime(2025, 5, 1, 10, 5)),
    ("run-b", "score-suite", "ioi", "georglange/crosslayer-transcoder-topk-16k", "main", "h-clt",
     "clt", "gpt2", "Mary and John went to the store, Jon gave a drink to", 15, PARAMS, "ok",
     None, 0.7101, 0.9130, None, None, 50.0, None, None, datetime(2025, 5, 2, 10, 0)),
    ("run-b", "score-suite", "ioi", "georglange/crosslayer-transcoder-topk-16k", "main", "h-clt",
     "clt", "gpt2", "When Alice and Bob went to the park, Bob gave a ball to", 16, PARAMS,
     "failed", "AttributionError: no active features", None, None, None, None, None, None, None,
     datetime(2025, 5, 2, 10, 1)),
]  # fmt: skip

# What each shipped migration's SQL hashes to. A shipped migration never changes: if one of these
# fails, put the change in a new migration instead.
SHIPPED_SQL_SHA256 = {
    1: "7b403a87fc2ad6fdd4916d37f3d3ab598199aaaca08ecf5551e64722121b5dd5",
    2: "a82ecc82a9801af46bde3355d9b711a4f88f901ce4743ff2273a0b3193b62564",
    3: "7b693ff86e9c0a3784e1fc11372372f53f553a9ad5287ea560ef0715983787ed",
    4: "9ba501ddc897ae8b823e0e911475df1b84eacaab2e1cdbf72e05450a0faccde0",
    5: "ac50b36a172cfbba929f1b844285d7f1ab9a3c305d6ceb46fbde9e60079b450c",
    6: "fdcbe85bf07d79ffd19578b9411fbdd014169eea9f0f73ede39927894e2d566d",
    7: "0e103a6aa77bffaf7c63c288a2eeb4452a6425e6ecf007dacec2ebff698ae390",
    # by name: its number is given when the branches that add migrations are merged
    migration_named(TRAINING_STEP_MIGRATION).version: (
        "1a59512201564ed72ffb424ba6339040ad4d583345ab3f2d87d3733e824ba1c8"
    ),
}
# Migrations added beside others at once are looked up by name (renumbered at merge).
SHIPPED_SQL_SHA256 |= {
    next(m.version for m in MIGRATIONS if m.name.startswith(name)): sha256
    for name, sha256 in {
        "subgraph scores of pinned node sets": (
            "6c1d8bd5cbc8c328eae089a38f5ae73e127a22024b9d2efb78549ab08c62b268"
        ),
        "paths relative to their roots": (
            "b90f2e7978df30df5f9afcb01fad7571115b5f049d973ec76baaec3c1c340920"
        ),
        "a lake's writers all take the writers' lock": (
            "0cb70ba2bfe8b07184adab7b913241866ec17d88d557e6e63a5158c01f66dd60"
        ),
    }.items()
}


def database_at_001(path: Path, rows: list[tuple]) -> None:
    with duckdb.connect(str(path)) as con:
        con.execute(FLAT_SCHEMA_001)
        con.executemany(
            f"INSERT INTO scores ({', '.join(FLAT_COLUMNS)}) "
            f"VALUES ({', '.join('?' for _ in FLAT_COLUMNS)})",
            rows,
        )


def test_a_new_database_gets_every_migration_in_order(db_path: Path) -> None:
    with open_database(db_path) as con:
        versions = con.execute("SELECT version FROM schema_version ORDER BY version").fetchall()

    assert [v for (v,) in versions] == list(range(1, CURRENT_VERSION + 1))


def test_migrating_from_001_keeps_every_row_with_every_value(db_path: Path) -> None:
    database_at_001(db_path, FLAT_ROWS)

    with open_database(db_path) as con:
        assert schema_version(con) == CURRENT_VERSION
        migrated = con.execute(
            f"SELECT {', '.join(FLAT_COLUMNS)} FROM scores_wide ORDER BY created_at"
        ).fetchall()

    assert len(migrated) == len(FLAT_ROWS)
    for before, after in zip(FLAT_ROWS, migrated, strict=True):
        after_by_column = dict(zip(FLAT_COLUMNS, after, strict=True))
        before_by_column = dict(zip(FLAT_COLUMNS, before, strict=True))
        # params are re-serialised canonically (sorted keys); equal as JSON values.
        assert json.loads(after_by_column.pop("params_json")) == json.loads(
            before_by_column.pop("params_json")
        )
        assert after_by_column == before_by_column


def test_migrated_runs_span_their_first_to_last_score(db_path: Path) -> None:
    database_at_001(db_path, FLAT_ROWS)

    with open_database(db_path) as con:
        runs = con.execute(
            "SELECT flow_run_id, started_at, finished_at, status FROM runs ORDER BY 1"
        ).fetchall()

    assert runs == [
        ("run-a", datetime(2025, 5, 1, 10, 0), datetime(2025, 5, 1, 10, 5), "unknown"),
        ("run-b", datetime(2025, 5, 2, 10, 0), datetime(2025, 5, 2, 10, 1), "unknown"),
    ]


def test_a_failing_migration_rolls_back_and_keeps_the_database_at_its_version(
    db_path: Path,
) -> None:
    broken = list(FLAT_ROWS[0])
    broken[FLAT_COLUMNS.index("params_json")] = "{not json"
    database_at_001(db_path, [FLAT_ROWS[1], tuple(broken)])

    with pytest.raises(StorageError, match=r"migration 002 .* rolled back"):
        open_database(db_path)

    with duckdb.connect(str(db_path), read_only=True) as con:
        assert schema_version(con) == 1
        assert con.execute("SELECT count(*) FROM scores").fetchone() == (2,)


def test_a_reader_of_an_old_database_sees_it_migrated(db_path: Path) -> None:
    database_at_001(db_path, FLAT_ROWS)

    rows = history(db_path)

    assert len(rows) == len(FLAT_ROWS)


def test_a_database_from_a_newer_tracerflow_is_refused_not_touched(db_path: Path) -> None:
    open_database(db_path).close()
    with duckdb.connect(str(db_path)) as con:
        con.execute("INSERT INTO schema_version VALUES (99, 'from the future', now())")

    with pytest.raises(StorageError, match="newer than this tracerflow"):
        history(db_path)


def test_shipped_migrations_never_change() -> None:
    assert {m.version: hashlib.sha256(m.sql.encode()).hexdigest() for m in MIGRATIONS} == (
        SHIPPED_SQL_SHA256
    )


def test_migrations_are_literal_sql_not_built_from_code() -> None:
    source = Path(__file__).resolve().parents[2] / "tracerflow" / "storage" / "migrations.py"
    text = source.read_text()
    literals = {
        int(node.targets[0].id.removeprefix("MIGRATION_")): node.value.value
        for node in ast.parse(text).body
        if isinstance(node, ast.Assign)
        and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id.startswith("MIGRATION_")
        and isinstance(node.value, ast.Constant)  # not an f-string, a join or a call
    }
    # each migration runs exactly the string literal written in the module, nothing computed
    assert {m.version: m.sql for m in MIGRATIONS} == literals
    for name in (f"MIGRATION_{version:03d}" for version in SHIPPED_SQL_SHA256):
        assert f'{name} = """' in text  # a plain literal, not an f-string or a join
    assert "from tracerflow.storage.records" not in text
    assert "from tracerflow.storage.stats" not in text


# Text that trips a hand-written encoder: quotes, backslashes, separators, digits and colons,
# newlines and control characters, non-ASCII and astral characters, and the word NULL.
AWKWARD = [
    'Mary said "hi" to Jon\\\\Jane | 12:34',
    "line one\nline two\ttab \x01\x1f",
    "Éléonore et Zoë — « café » ✓ 😀 𝔘",
    "NULL",
    "4:NULL",
    "",
]


def test_ids_are_the_same_bytes_in_python_and_in_the_migrations_sql(db_path: Path) -> None:
    rows = []
    for index, text in enumerate(AWKWARD):
        params = json.dumps({"batch_size": 256 + index, "offload": None, "dtype": "float32"})
        rows.append(
            (f"run-{index}", "score-one", None, f"./clt {text}", None, f"hash {text}", "clt",
             f"model {text}", f"prompt {text}", 5, params, "ok", None, 0.5, 0.9, None, None,
             1.0, None, None, datetime(2025, 5, 1, 10, index))
        )  # fmt: skip
    database_at_001(db_path, rows)

    with open_database(db_path) as con:
        migrated = con.execute(
            "SELECT flow_run_id, transcoder_id, model_id, prompt_id, params_hash, score_id, "
            "transcoder_source, transcoder_content_hash, model_name, prompt, params_json "
            "FROM scores_wide ORDER BY created_at"
        ).fetchall()

    assert len(migrated) == len(AWKWARD)
    for run_id, tid, mid, pid, phash, sid, source, content, model, text, params in migrated:
        transcoder = TranscoderInfo(source, None, None, content, "clt", None, None, None, None)
        assert tid == transcoder.transcoder_id
        assert mid == ModelInfo(model, None, None, None, None).model_id
        assert pid == prompt_id(text)
        assert phash == params_hash(json.loads(params))
        assert sid == stable_id("score", run_id, tid, mid, pid, phash)


def run_info(flow_run_id: str, started_at: datetime) -> RunInfo:
    return RunInfo(flow_run_id, "score-suite", None, "ioi", started_at, None, "completed",
                   "0.1.0", "0.5.0", "2.13.0", "cpu", "test-host")  # fmt: skip


def test_a_series_continues_from_001_through_the_migrations_into_a_new_run(
    db_path: Path,
) -> None:
    database_at_001(db_path, FLAT_ROWS)
    open_database(db_path).close()
    with duckdb.connect(str(db_path), read_only=True) as con:
        ((migrated_transcoder, migrated_model),) = con.execute(
            "SELECT DISTINCT transcoder_id, model_id FROM scores_wide "
            "WHERE transcoder_source = 'georglange/crosslayer-transcoder-topk-16k'"
        ).fetchall()
    # Tonight's run knows more than 001 did: the commit, the shapes, the activation.
    clt = TranscoderInfo(
        source="georglange/crosslayer-transcoder-topk-16k", revision="main",
        commit_sha="0123456789abcdef0123456789abcdef01234567", content_hash="h-clt", kind="clt",
        n_layers=12, d_model=768, d_features=16000, activation="topk", activation_params={"k": 16},
    )  # fmt: skip
    gpt2 = ModelInfo(name="gpt2", n_layers=12, d_model=768, d_vocab=50257, n_ctx=1024)
    prompt = "Mary and John went to the store, Jon gave a drink to"
    tonight = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
    record = score(clt, prompt, 0.72, 0.92, created_at=tonight, params=json.loads(PARAMS),
                   model=gpt2)  # fmt: skip

    record_run(db_path, run_info("tonight", tonight), [record])

    assert (clt.transcoder_id, gpt2.model_id) == (migrated_transcoder, migrated_model)
    series = [row for row in history(db_path, transcoder=clt.source, prompt=prompt)]
    assert [(row["flow_run_id"], row["replacement_score"]) for row in series] == [
        ("tonight", 0.72), ("run-b", 0.7101), ("run-a", 0.7059),
    ]  # fmt: skip
    assert series[0]["previous_replacement_score"] == 0.7101
    assert series[0]["replacement_change"] == pytest.approx(0.72 - 0.7101)
    with duckdb.connect(str(db_path), read_only=True) as con:
        # The new run filled in what 001 did not know; nothing it knew was replaced.
        assert con.execute(
            "SELECT revision, commit_sha, kind, n_layers, activation FROM transcoders "
            "WHERE transcoder_id = ?",
            [clt.transcoder_id],
        ).fetchall() == [("main", clt.commit_sha, "clt", 12, "topk")]
        assert con.execute("SELECT name, n_layers, d_vocab FROM models").fetchall() == [
            ("gpt2", 12, 50257)
        ]


def old_json_id(entity: str, *fields: object) -> str:
    """How the first 002 and the writer of that time computed ids (sha256 of a JSON list)."""
    text = json.dumps([entity, *fields], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def database_at_002_by_the_old_writer(path: Path) -> dict[str, str]:
    """Rows as the writer before issue 11 recorded them: JSON ids with the commit sha and the
    model shape in them, and the placeholders it wrote for a failed download."""
    with duckdb.connect(str(path)) as con:
        apply_migrations(con, up_to=2)
        params = json.dumps({"batch_size": 256, "max_n_logits": 10}, separators=(",", ":"))
        phash = old_json_id("params", json.loads(params))
        source = "georglange/crosslayer-transcoder-topk-16k"
        ids = {
            "monday": old_json_id("transcoder", source, "sha-monday", "h-clt"),
            # Same weights, a later commit (a README change): the old id split the series.
            "tuesday": old_json_id("transcoder", source, "sha-tuesday", "h-clt"),
            "failed": old_json_id("transcoder", source, None, "unknown"),
            "model": old_json_id("model", "gpt2", 12, 768, 50257, 1024),
            "model-of-failure": old_json_id("model", "gpt2", 0, 0, 0, 0),
            "prompt": old_json_id("prompt", "The cat sat on the"),
        }
        con.execute(
            "INSERT INTO transcoders (transcoder_id, source, revision, commit_sha, content_hash, "
            "kind, n_layers, d_model, d_features, activation, activation_params_json, k) VALUES "
            "(?, ?, 'main', 'sha-monday', 'h-clt', 'clt', 12, 768, 16000, 'topk', '{}', 16),"
            "(?, ?, 'main', 'sha-tuesday', 'h-clt', 'clt', 12, 768, 16000, 'topk', '{}', 16),"
            "(?, ?, NULL, NULL, 'unknown', 'clt', 0, 0, 0, 'unknown', '{}', NULL)",
            [ids["monday"], source, ids["tuesday"], source, ids["failed"], source],
        )
        con.execute(
            "INSERT INTO models VALUES (?, 'gpt2', 12, 768, 50257, 1024), (?, 'gpt2', 0, 0, 0, 0)",
            [ids["model"], ids["model-of-failure"]],
        )
        con.execute("INSERT INTO prompts VALUES (?, 'The cat sat on the', 0)", [ids["prompt"]])
        for day, (run_id, transcoder, model, status, value) in enumerate(
            [
                ("monday", ids["monday"], ids["model"], "ok", 0.70),
                ("tuesday", ids["tuesday"], ids["model"], "ok", 0.71),
                ("wednesday", ids["failed"], ids["model-of-failure"], "failed", None),
            ]
        ):
            at = datetime(2025, 6, 2 + day, 2, 0)
            con.execute(
                "INSERT INTO runs (flow_run_id, suite_name, started_at, status, recorded_at) "
                "VALUES (?, 'ioi', ?, 'completed', ?)",
                [run_id, at, at],
            )
            key = (run_id, transcoder, model, ids["prompt"], phash)
            con.execute(
                "INSERT INTO scores (score_id, flow_run_id, transcoder_id, model_id, prompt_id, "
                "params_hash, params_json, n_tokens, status, replacement_score, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [old_json_id("score", *key), *key, params, 0 if value is None else 6, status,
                 value, at],
            )  # fmt: skip
    return ids


def test_003_rekeys_a_database_the_old_writer_wrote_and_drops_its_placeholders(
    db_path: Path,
) -> None:
    database_at_002_by_the_old_writer(db_path)

    with open_database(db_path) as con:
        transcoders = con.execute(
            "SELECT transcoder_id, commit_sha, content_hash, kind, n_layers, activation "
            "FROM transcoders ORDER BY content_hash NULLS LAST"
        ).fetchall()
        models = con.execute("SELECT model_id, n_layers FROM models").fetchall()
        scores = con.execute(
            "SELECT flow_run_id, transcoder_id, params_hash, n_tokens, attribution_threads "
            "FROM scores ORDER BY created_at"
        ).fetchall()

    source = "georglange/crosslayer-transcoder-topk-16k"
    weights = stable_id("transcoder", source, "h-clt")
    unknown = stable_id("transcoder", source, None)
    # Monday's and Tuesday's commits hold the same weights: one transcoder, the first commit kept.
    assert transcoders == [
        (weights, "sha-monday", "h-clt", "clt", 12, "topk"),
        (unknown, None, None, None, None, None),
    ]
    assert models == [(stable_id("model", "gpt2"), 12)]
    phash = params_hash({"batch_size": 256, "max_n_logits": 10})
    assert scores == [
        ("monday", weights, phash, 6, None),
        ("tuesday", weights, phash, 6, None),
        ("wednesday", unknown, phash, None, None),
    ]
    tuesday = [row for row in history(db_path) if row["flow_run_id"] == "tuesday"]
    assert tuesday[0]["previous_replacement_score"] == 0.70  # one series across the commits


@contextlib.contextmanager
def writer_lock_in_another_process(db_path: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the writer lock (as `record_run` does while it writes) until
    it is sent a line; it prints the UTC time it let go."""
    code = (
        "import sys\n"
        "from datetime import UTC, datetime\n"
        "from filelock import FileLock\n"
        f"lock = FileLock({str(db_path) + '.lock'!r})\n"
        "lock.acquire()\n"
        "print('locked', flush=True)\n"
        "sys.stdin.readline()\n"
        "released_at = datetime.now(UTC).replace(tzinfo=None)\n"
        "lock.release()\n"
        "print(released_at.isoformat(), flush=True)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield holder
    finally:
        holder.kill()
        holder.wait()


def test_open_database_does_not_migrate_while_another_writer_holds_the_lock(
    db_path: Path,
) -> None:
    database_at_001(db_path, FLAT_ROWS)

    with (
        writer_lock_in_another_process(db_path),
        pytest.raises(StorageError, match="another tracerflow process has been writing"),
    ):
        open_database(db_path, timeout_s=0.5)

    with duckdb.connect(str(db_path), read_only=True) as con:
        assert schema_version(con) == 1


def test_open_database_migrates_only_after_the_other_writer_lets_go(db_path: Path) -> None:
    database_at_001(db_path, FLAT_ROWS)

    with writer_lock_in_another_process(db_path) as holder:
        opener = threading.Thread(target=lambda: open_database(db_path, timeout_s=60).close())
        opener.start()
        time.sleep(0.5)
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.write("release\n")
        holder.stdin.flush()
        released_at = datetime.fromisoformat(holder.stdout.readline().strip())
        opener.join(timeout=60)

    with duckdb.connect(str(db_path), read_only=True) as con:
        applied = con.execute(
            "SELECT version, applied_at FROM schema_version WHERE version > 1 ORDER BY version"
        ).fetchall()
    assert [version for version, _ in applied] == list(range(2, CURRENT_VERSION + 1))
    assert all(applied_at >= released_at for _, applied_at in applied)


def test_003_refuses_to_drop_a_score_whose_parent_row_is_missing(db_path: Path) -> None:
    database_at_002_by_the_old_writer(db_path)
    with duckdb.connect(str(db_path)) as con:
        con.execute("DELETE FROM prompts")  # every score now points at no prompt

    with pytest.raises(StorageError, match=r"migration 003 .* no transcoder, model or prompt row"):
        open_database(db_path)

    with duckdb.connect(str(db_path), read_only=True) as con:
        assert schema_version(con) == 2
        assert con.execute("SELECT count(*) FROM scores").fetchone() == (3,)
