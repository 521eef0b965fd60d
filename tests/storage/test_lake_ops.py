"""A lake kept up: migrated in place from an older schema under the schema lock, and maintained
(inlined rows flushed, files merged, old snapshots expired but those of recorded runs)."""

from __future__ import annotations

import multiprocessing
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from typer.testing import CliRunner

from tests.postgres import PostgresServer
from tests.storage.builders import IOI_PROMPTS, OLD_CLT, PLT, populate, run_info, score, transcoder
from tracerflow.cli import app
from tracerflow.errors import StorageError, StoreBusyError
from tracerflow.storage import lake, lake_schema, queries, snapshots
from tracerflow.storage.database import reading, record_run
from tracerflow.storage.lake_schema import Column, Schema, upgrade_statements
from tracerflow.storage.maintenance import maintain
from tracerflow.storage.migrations import CURRENT_VERSION, MIGRATIONS, Migration
from tracerflow.storage.pglock import SCHEMA_LOCK_KEY
from tracerflow.storage.store import AsOf, FileStore, LakeStore, NoHistoryError

OLDER = 5  # the schema of the lakes made before issue 25


def new_lake(postgres: PostgresServer, tmp_path: Path, name: str) -> LakeStore:
    data_path = tmp_path / f"{name}-data"
    data_path.mkdir()
    return LakeStore(postgres.create_database(name), data_path)


def rows(store: Any, sql: str, as_of: AsOf | None = None) -> list[tuple[Any, ...]]:
    with reading(store, as_of=as_of) as con:
        return con.execute(sql).fetchall()


def lake_at(store: LakeStore, version: int, with_run: bool = True) -> None:
    """A lake as the tracerflow of schema ``version`` left it: its schema, then (``with_run``,
    from 005 on) one run with one score written by SQL of that schema (the current writer would
    migrate first)."""
    con = lake.connect(store, read_only=False)
    try:
        lake.create_schema(con, version)
        if not with_run:
            return
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "INSERT INTO runs (flow_run_id, status, recorded_at) "
            "VALUES ('old-run', 'completed', now()::TIMESTAMP)"
        )
        con.execute("INSERT INTO transcoders (transcoder_id, source) VALUES ('t', 'old-clt')")
        con.execute("INSERT INTO models (model_id, name) VALUES ('m', 'gpt2')")
        con.execute("INSERT INTO prompts (prompt_id, text) VALUES ('p', 'When Mary and John')")
        con.execute(
            "INSERT INTO scores (score_id, flow_run_id, transcoder_id, model_id, prompt_id, "
            "params_hash, params_json, status, replacement_score, attribution_path, created_at) "
            "VALUES ('s', 'old-run', 't', 'm', 'p', 'h', '{}', 'ok', 0.75, 'fast', now())"
        )
        con.execute("COMMIT")
    finally:
        con.close()


def table_columns(con: Any) -> list[tuple[str, str, str]]:
    return con.execute(
        "SELECT c.table_name, c.column_name, c.data_type FROM duckdb_columns() c "
        "JOIN duckdb_tables() t USING (database_name, schema_name, table_name) "
        "WHERE c.database_name = current_database() AND c.schema_name = 'main' "
        "AND c.table_name <> 'lake_writes' ORDER BY c.table_name, c.column_index"
    ).fetchall()


# --- migrations in place ---------------------------------------------------------------------


def schema(tables: dict[str, list[str]], views: dict[str, str] | None = None) -> Schema:
    return Schema(
        tuple(
            (name, tuple(Column(c, "VARCHAR", True, None) for c in columns))
            for name, columns in tables.items()
        ),
        (),
        tuple((name, f"CREATE VIEW {name} AS {body}") for name, body in (views or {}).items()),
    )


def test_a_lake_takes_new_tables_columns_and_views_and_a_backfill_in_that_order() -> None:
    before = schema({"scores": ["a"]}, {"v": "SELECT 1", "gone": "SELECT 2"})
    after = schema({"scores": ["a", "b"], "notes": ["n"]}, {"v": "SELECT 3", "w": "SELECT 4"})
    migration = Migration(99, "test", "ALTER TABLE scores ADD b VARCHAR; UPDATE scores SET b = a;")

    assert upgrade_statements(before, after, migration) == [
        'ALTER TABLE "scores" ADD COLUMN "b" VARCHAR',
        'CREATE TABLE "notes" ("n" VARCHAR)',
        'DROP VIEW "gone"',
        "CREATE OR REPLACE VIEW v AS SELECT 3",
        "CREATE OR REPLACE VIEW w AS SELECT 4",
        "UPDATE scores SET b = a",
    ]


@pytest.mark.parametrize(
    ("after", "why"),
    [
        (schema({}), "drops or renames table scores"),
        (schema({"scores": ["b"]}), "drops or renames column scores.a"),
        (
            Schema((("scores", (Column("a", "INTEGER", True, None),)),), (), ()),
            r"changes the type of scores.a \(VARCHAR to INTEGER\)",
        ),
    ],
)
def test_a_change_a_lake_cannot_take_in_place_is_refused_naming_the_migration(
    after: Schema, why: str
) -> None:
    with pytest.raises(StorageError, match=f"migration 099 \\(test\\) cannot run .*: it {why}"):
        upgrade_statements(schema({"scores": ["a"]}), after, Migration(99, "test", ""))


def test_a_lake_written_at_005_is_migrated_in_place_keeping_its_rows_and_its_past(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = new_lake(postgres, tmp_path, "at_005")
    lake_at(store, OLDER)
    (old_run_snapshot,) = [s["snapshot_id"] for s in queries_snapshots(store)][:1]
    with lake.connect(store, read_only=True) as con:  # the row writers of its time rewrote
        assert con.execute(f"SELECT writes FROM {lake.WRITER_TURN_TABLE}").fetchall() == [(0,)]

    # A reader opens it with the current code: migrated first, the row as it was.
    assert rows(store, "SELECT version FROM schema_version ORDER BY 1") == [
        (m.version,) for m in MIGRATIONS
    ]
    assert rows(
        store, "SELECT flow_run_id, replacement_score, attribution_path, prompt FROM scores_wide"
    ) == [("old-run", 0.75, "fast", "When Mary and John")]
    with reading(store) as con:
        assert table_columns(con) == expected_columns()
        for name, _ in lake_schema.schema_at(CURRENT_VERSION).views:
            con.execute(f"SELECT * FROM {name}").fetchall()  # every view binds on the lake
    # --as-of the old run's snapshot still reads, in the schema of its time.
    old = queries.history(store, as_of=AsOf(snapshot=old_run_snapshot))
    assert [(r["flow_run_id"], r["replacement_score"]) for r in old] == [("old-run", 0.75)]
    # And the current writer records beside it.
    record_run(store, run_info("new-run"), [score(transcoder(OLD_CLT), "p2", 0.8, 0.9)])
    assert rows(store, "SELECT flow_run_id FROM runs ORDER BY 1") == [("new-run",), ("old-run",)]
    # The migration dropped that table: a write of a tracerflow that takes no writers' lock
    # (it starts by rewriting the row) fails there and writes nothing.
    with (
        lake.connect(store, read_only=False) as con,
        pytest.raises(duckdb.CatalogException, match=lake.WRITER_TURN_TABLE),
    ):
        con.execute(f"UPDATE {lake.WRITER_TURN_TABLE} SET writes = writes + 1")


def test_an_older_lake_s_absolute_paths_under_the_roots_become_relative_and_follow_a_move(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration "paths relative to their roots" run in place on a lake at 005: a graph path
    under the migrating process's artifact root and a graph-files path under its home are
    stored relative; the views resolve them under the roots of whoever reads (a moved home);
    a path outside the roots stays as it was."""
    home = tmp_path / "home"
    monkeypatch.setenv("TRACERFLOW_HOME", str(home))
    store = new_lake(postgres, tmp_path, "paths_at_005")
    lake_at(store, OLDER)
    con = lake.connect(store, read_only=False)  # as the older tracerflow wrote them: absolute
    try:
        con.execute(
            "UPDATE scores SET graph_path = ?, graph_files_path = ?",
            [f"{home}/artifacts/attribute/k/graph.safetensors", "/elsewhere/g.json"],
        )
    finally:
        con.close()
    stored = "SELECT graph_path, graph_files_path FROM scores"
    assert rows(store, stored) == [("attribute/k/graph.safetensors", "/elsewhere/g.json")]
    moved = tmp_path / "moved"
    monkeypatch.setenv("TRACERFLOW_HOME", str(moved))
    wide = "SELECT graph_path, graph_files_path, transcoder_version FROM scores_wide"
    assert rows(store, wide) == [
        (f"{moved}/artifacts/attribute/k/graph.safetensors", "/elsewhere/g.json", None)
    ]


def queries_snapshots(store: LakeStore) -> list[dict[str, Any]]:
    """The lake's snapshots that recorded a run, oldest first."""
    with lake.connect(store, read_only=True) as con:
        kept = snapshots.lake_snapshots(con)
        runs = snapshots.run_snapshots(kept, snapshots.table_id(con, "runs"))
    return [{"snapshot_id": s.snapshot_id, "time": s.time} for s in kept if s.snapshot_id in runs]


def expected_columns() -> list[tuple[str, str, str]]:
    """The current schema's tables and columns, as the migrations build them in a file."""
    return [
        (name, column.name, column.data_type)
        for name, columns in sorted(lake_schema.schema_at(CURRENT_VERSION).tables)
        for column in columns
    ]


def open_writer_at_barrier(url: str, barrier: Any) -> None:
    from tracerflow.storage.store import parse_store

    barrier.wait(timeout=120)
    lake.open_writer(parse_store(url)).close()  # type: ignore[arg-type]


def test_two_processes_opening_an_old_lake_at_once_migrate_it_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = new_lake(postgres, tmp_path, "two_openers")
    # From 003: the migrations since add a table (transcoder_metrics), views and columns.
    before_metrics = next(m.version for m in MIGRATIONS if "quality metrics" in m.name) - 1
    lake_at(store, before_metrics, with_run=False)
    with lake.connect(store, read_only=True) as con:
        before = len(snapshots.lake_snapshots(con))
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(2)
    openers = [
        spawn.Process(target=open_writer_at_barrier, args=(store.url, barrier)) for _ in "ab"
    ]
    for opener in openers:
        opener.start()
    for opener in openers:
        opener.join(timeout=180)

    assert [opener.exitcode for opener in openers] == [0, 0]
    assert rows(store, "SELECT version, count(*) FROM schema_version GROUP BY 1 ORDER BY 1") == [
        (m.version, 1) for m in MIGRATIONS
    ]
    with lake.connect(store, read_only=True) as con:
        assert len(snapshots.lake_snapshots(con)) == before + 1  # one migration commit
    with reading(store) as con:
        assert table_columns(con) == expected_columns()
        for name, _ in lake_schema.schema_at(CURRENT_VERSION).views:
            con.execute(f"SELECT * FROM {name}").fetchall()  # every view binds on the lake


def test_the_schema_lock_keeps_a_second_holder_out_until_the_first_lets_go(
    postgres: PostgresServer,
) -> None:
    store = LakeStore(postgres.create_database("locks"))
    busy = pytest.raises(StoreBusyError, match=f"advisory lock {SCHEMA_LOCK_KEY}")
    with lake.schema_lock(store), busy, lake.schema_lock(store, timeout_s=0.2):
        pass
    with lake.schema_lock(store, timeout_s=5):
        pass  # released on exit


# --- maintenance -------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_maintain_flushes_expires_old_snapshots_and_keeps_those_of_recorded_runs(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = new_lake(postgres, tmp_path, "maintained")

    def night(number: int, source: str) -> None:
        records = [
            score(transcoder(source), prompt, 0.5 + number / 10, 0.9) for prompt in IOI_PROMPTS
        ]
        record_run(store, run_info(f"night-{number}"), records)

    night(0, OLD_CLT)
    night(1, PLT)
    # Nothing is older than a day: the inlined rows are flushed, nothing is expired.
    recent = maintain(store, keep_days=1)
    assert recent.flushed_rows >= 2 * len(IOI_PROMPTS) and recent.expired == []
    assert recent.data_files_after > recent.data_files_before
    night(2, OLD_CLT)
    history = queries.history(store)
    first, second, third = queries_snapshots(store)
    as_of_first = queries.history(store, as_of=AsOf(snapshot=first["snapshot_id"]))
    assert len(as_of_first) == len(IOI_PROMPTS)

    done = invoke("store", "maintain", "--keep-days", "0", "--store", store.url)
    assert done.exit_code == 0, done.output
    # The third night's rows flushed into a second file per table, and the two merged: its run
    # and its scores (its transcoder, model, prompts were known; a write rewrites no other row).
    assert f"flushed {1 + len(IOI_PROMPTS)} inlined rows" in done.stdout, done.stdout
    merged = re.search(r"merged (\d+) small data files into (\d+)", done.stdout)
    assert merged and int(merged[1]) > int(merged[2]) > 0, done.stdout
    assert "kept 3 older ones that recorded a run" in done.stdout, done.stdout
    with lake.connect(store, read_only=True) as con:
        kept = [s.snapshot_id for s in snapshots.lake_snapshots(con)]
    runs = [first["snapshot_id"], second["snapshot_id"], third["snapshot_id"]]
    # The runs' and the two this maintenance made (flush, merge: newer than its cutoff).
    assert kept[:3] == runs and len(kept) == 5
    assert queries.history(store) == history
    assert queries.history(store, as_of=AsOf(snapshot=runs[0])) == as_of_first

    # A run's snapshot expired (as --force does): a time in its span cannot be read as it was.
    with lake.connect(store, read_only=False) as con:
        con.execute(f"CALL ducklake_expire_snapshots('lake', versions => [{runs[1]}])")
    with pytest.raises(StorageError, match=r"past the expiry .* read at one of those two"):
        queries.history(store, as_of=AsOf(time=second["time"] + timedelta(microseconds=1)))

    forced = invoke("store", "maintain", "--keep-days", "0", "--force", "--store", store.url)
    assert forced.exit_code == 0, forced.output
    # All but the newest: the runs' two left and the flush's.
    assert f"expired 3 snapshots older than 0 days ({runs[0]}, {runs[2]}, {kept[3]})" in (
        forced.stdout
    )
    assert queries.history(store) == history
    past = invoke("history", "--as-of", str(runs[0]), "--store", store.url)
    assert past.exit_code == 2
    (line,) = past.stderr.strip().splitlines()
    assert f"error: --as-of snapshot {runs[0]} is past the expiry of" in line, line


def test_maintain_on_the_embedded_file_is_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "scores.duckdb"
    populate(path, nights=1)
    con = duckdb.connect(str(path))  # a write left in the write-ahead log
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("UPDATE runs SET host = 'noted'")
    con.close()
    wal = path.with_name("scores.duckdb.wal")
    assert wal.exists()
    history = queries.history(path)

    report = maintain(FileStore(path), keep_days=0)

    assert report.checkpointed and "checkpointed it" in report.lines(0)[0]
    assert not wal.exists()
    assert queries.history(path) == history
    missing = tmp_path / "none.duckdb"
    with pytest.raises(NoHistoryError, match=f"no score database at {missing}: nothing to"):
        maintain(FileStore(missing))
    assert not missing.exists()  # never created
