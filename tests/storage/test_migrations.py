"""Migrations: numbered, applied at open, transactional, and 001 → 002 loses no row."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import duckdb
import pytest

from tracerflow.errors import StorageError
from tracerflow.storage import history, open_database
from tracerflow.storage.migrations import CURRENT_VERSION, apply_migrations, schema_version

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


def database_at_001(path: Path, rows: list[tuple]) -> None:
    with duckdb.connect(str(path)) as con:
        apply_migrations(con, up_to=1)
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
