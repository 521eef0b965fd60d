"""The DuckLake store on a real PostgreSQL: the same tables, views and answers as the embedded
file, concurrent writers that land every row once, time travel, and clear failures."""

from __future__ import annotations

import glob
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.postgres import PostgresServer
from tests.storage.builders import (
    FIRST_NIGHT,
    GPT2,
    IOI_PROMPTS,
    OLD_CLT,
    populate,
    run_info,
    score,
    transcoder,
)
from tests.tmpfs import mounted_tmpfs
from tracerflow.errors import StorageError
from tracerflow.storage import lake, queries
from tracerflow.storage.copy import TABLES, copy_history
from tracerflow.storage.database import lake_snapshots, reading, record_run
from tracerflow.storage.store import (
    AsOf,
    FileStore,
    LakeStore,
    NoHistoryError,
    parse_as_of,
    parse_store,
)

VIEWS = (
    "scores_wide", "latest_scores", "score_history", "transcoder_summary",
    "transcoder_metrics_wide", "latest_transcoder_metrics", "transcoder_metrics_history",
    "transcoder_quality", "subgraphs_wide",
)  # fmt: skip


def new_lake(postgres: PostgresServer, tmp_path: Path, name: str) -> LakeStore:
    data_path = tmp_path / f"{name}-data"
    data_path.mkdir()  # a lake's data folder exists first (a mount every machine shares)
    return LakeStore(postgres.create_database(name), data_path)


@pytest.fixture(scope="module")
def histories(
    postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[FileStore, LakeStore]:
    """The same history written by the same writer into a file and into a lake."""
    folder = tmp_path_factory.mktemp("histories")
    file_store = FileStore(folder / "scores.duckdb")
    lake_store = new_lake(postgres, folder, "populated_lake")
    populate(file_store.path)
    populate(lake_store)  # type: ignore[arg-type]  # populate takes any store
    return file_store, lake_store


def rounded(value: Any) -> Any:
    """Floats to 12 significant digits: a lake scans rows in another order than the file, so
    sums (means, standard deviations) may differ in their last bit."""
    if isinstance(value, float):
        return float(f"{value:.12g}")
    if isinstance(value, dict):
        return {key: rounded(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(rounded(item) for item in value)
    return value


def rows(store: Any, sql: str) -> list[tuple[Any, ...]]:
    return queries.run_sql(store, sql)[1]


def columns_of(store: Any, relation: str) -> list[tuple[str, str]]:
    with reading(store) as con:
        described = con.execute(f"DESCRIBE SELECT * FROM {relation}").fetchall()
    return [(name, data_type) for name, data_type, *_ in described]


def test_a_lake_has_the_file_s_tables_and_views_with_the_same_columns(
    histories: tuple[FileStore, LakeStore],
) -> None:
    file_store, lake_store = histories
    for relation in [table for table, _ in TABLES] + list(VIEWS) + ["schema_version"]:
        assert columns_of(lake_store, relation) == columns_of(file_store, relation), relation


def test_every_view_and_query_answers_the_same_on_a_lake_as_on_the_file(
    histories: tuple[FileStore, LakeStore],
) -> None:
    file_store, lake_store = histories
    for relation in (*VIEWS, "scores", "runs", "transcoders", "prompts", "models"):
        # runs.recorded_at is when each write happened, the one column that differs.
        columns = "* EXCLUDE (recorded_at)" if relation == "runs" else "*"
        ordered = f"SELECT {columns} FROM {relation} ORDER BY ALL"
        assert rounded(rows(lake_store, ordered)) == rounded(rows(file_store, ordered)), relation
    assert len(rows(lake_store, "SELECT * FROM scores")) == 49
    for query in (queries.history, queries.transcoder_summary, queries.graph_index):
        assert rounded(query(lake_store)) == rounded(query(file_store)), query.__name__
    pair = (OLD_CLT, "./checkpoints/clt-topk-16k-v2")
    lake_compare, file_compare = (queries.compare(s, *pair) for s in (lake_store, file_store))
    assert rounded(lake_compare.rows) == rounded(file_compare.rows)


@pytest.mark.parametrize(
    "sql",
    [
        "INSERT INTO prompts VALUES ('x', 'y', 1)",
        "DELETE FROM scores",
        "ATTACH '/tmp/other.duckdb' AS other",
        "COPY scores TO '/tmp/out.csv'",
        "SET enable_external_access = true",
        "LOAD httpfs",
    ],
)
def test_sql_on_a_lake_refuses_anything_but_reading(
    histories: tuple[FileStore, LakeStore], sql: str
) -> None:
    with pytest.raises(StorageError, match="only reads"):
        queries.run_sql(histories[1], sql)


def test_a_lake_reader_cannot_read_files_or_write_the_lake_even_past_the_statement_wall(
    histories: tuple[FileStore, LakeStore],
) -> None:
    with pytest.raises(StorageError, match="file system operations are disabled"):
        queries.run_sql(histories[1], "SELECT * FROM read_csv('/etc/passwd')")
    with reading(histories[1]) as con, pytest.raises(duckdb.Error):
        con.execute("INSERT INTO prompts VALUES ('x', 'y', 1)")  # attached READ_ONLY


def test_recording_the_same_run_twice_into_a_lake_adds_nothing(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = new_lake(postgres, tmp_path, "twice")
    records = [score(transcoder(OLD_CLT), prompt, 0.7, 0.9) for prompt in IOI_PROMPTS]
    assert record_run(store, run_info("run-1"), records) == len(IOI_PROMPTS)
    assert record_run(store, run_info("run-1"), records) == 0
    assert rows(store, "SELECT count(*) FROM scores") == [(len(IOI_PROMPTS),)]


@pytest.mark.parametrize("kind", ["file", "lake"])
def test_a_later_run_fills_in_a_fact_recorded_as_unknown_and_replaces_none(
    kind: str, postgres: PostgresServer, tmp_path: Path
) -> None:
    """The first recorded value of a fact stays; a NULL one is filled in by the next run that
    knows it. On a lake the second run's transcoder is unsettled (a NULL it can fill): read again
    and filled in the writers' turn; the third's is settled before the turn and left alone."""
    store = (
        FileStore(tmp_path / "scores.duckdb")
        if kind == "file"
        else new_lake(postgres, tmp_path, "filled")
    )
    known = transcoder(OLD_CLT)
    unknown = replace(known, commit_sha=None, n_layers=None)
    shapeless = replace(GPT2, d_vocab=None)
    runs = [(unknown, shapeless), (known, GPT2), (replace(known, commit_sha="other"), shapeless)]
    for number, (scored, model) in enumerate(runs):
        records = [score(scored, prompt, 0.7, 0.9, model=model) for prompt in IOI_PROMPTS[:2]]
        assert record_run(store, run_info(f"run-{number}"), records) == 2
    assert rows(store, "SELECT commit_sha, n_layers FROM transcoders") == [
        (known.commit_sha, known.n_layers)
    ]
    assert rows(store, "SELECT name, d_vocab FROM models") == [(GPT2.name, GPT2.d_vocab)]
    assert rows(store, "SELECT count(*) FROM prompts") == [(2,)]


def record_at_barrier(url: str, run_number: int, barrier: Any) -> None:
    """A writer process: every run scores the same new transcoder, so each would insert it."""
    store = parse_store(url)
    records = [
        score(transcoder(OLD_CLT), prompt, 0.7 + run_number / 100, 0.9) for prompt in IOI_PROMPTS
    ]
    barrier.wait()
    record_run(store, run_info(f"concurrent-{run_number}"), records, timeout_s=120)


def test_concurrent_writers_land_every_row_once_and_the_shared_transcoder_once(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = new_lake(postgres, tmp_path, "concurrent")
    record_run(store, run_info("first"), [])  # creates the lake (the writers know no data path)
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(4)
    writers = [
        spawn.Process(target=record_at_barrier, args=(store.url, n, barrier)) for n in range(4)
    ]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=180)

    assert [writer.exitcode for writer in writers] == [0, 0, 0, 0]
    per_run = rows(store, "SELECT flow_run_id, count(*) FROM scores GROUP BY 1 ORDER BY 1")
    assert per_run == [(f"concurrent-{n}", len(IOI_PROMPTS)) for n in range(4)]
    assert rows(store, "SELECT count(*), count(DISTINCT transcoder_id) FROM transcoders") == [
        (1, 1)
    ]
    assert rows(store, "SELECT count(*) FROM prompts") == [(len(IOI_PROMPTS),)]


def record_and_die_before_commit(url: str) -> None:
    """Insert a whole run into the lake, then die before COMMIT (``kill -9`` mid-write)."""

    def die(con: duckdb.DuckDBPyConnection) -> int:
        from tracerflow.storage.database import _insert_run

        _insert_run(
            con,
            run_info("killed"),
            [score(transcoder(OLD_CLT), prompt, 0.7, 0.9) for prompt in IOI_PROMPTS],
        )
        os.kill(os.getpid(), 9)
        return 0

    lake.write(parse_store(url), die, timeout_s=60)  # type: ignore[arg-type]


def test_a_writer_killed_mid_write_leaves_no_part_of_its_run(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = new_lake(postgres, tmp_path, "killed")
    record_run(store, run_info("before"), [score(transcoder(OLD_CLT), "kept", 0.7, 0.9)])
    worker = multiprocessing.get_context("spawn").Process(
        target=record_and_die_before_commit, args=(store.url,)
    )
    worker.start()
    worker.join(timeout=120)

    assert worker.exitcode == -9
    assert rows(store, "SELECT flow_run_id FROM runs ORDER BY 1") == [("before",)]
    assert rows(store, "SELECT count(*) FROM scores") == [(1,)]
    # The lake still takes writes (no lock left behind).
    record_run(store, run_info("after"), [score(transcoder(OLD_CLT), "later", 0.7, 0.9)])
    assert rows(store, "SELECT count(*) FROM runs") == [(2,)]


def record_and_die_during_commit(url: str, run_id: str, delay_s: float) -> None:
    """Insert a whole run, then SIGKILL this process ``delay_s`` into its COMMIT."""
    import threading

    def insert_then_arm(con: duckdb.DuckDBPyConnection) -> int:
        from tracerflow.storage.database import _insert_run

        _insert_run(
            con,
            run_info(run_id),
            [score(transcoder(OLD_CLT), prompt, 0.7, 0.9) for prompt in IOI_PROMPTS],
        )
        threading.Timer(delay_s, lambda: os.kill(os.getpid(), 9)).start()
        return 0  # COMMIT runs next, with the kill on its way

    lake.write(parse_store(url), insert_then_arm, timeout_s=60)  # type: ignore[arg-type]
    time.sleep(30)  # committed before the kill landed: wait for it


def test_a_writer_killed_during_its_commit_leaves_its_run_whole_or_absent(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = new_lake(postgres, tmp_path, "killed_in_commit")
    record_run(store, run_info("before"), [score(transcoder(OLD_CLT), "kept", 0.7, 0.9)])
    spawn = multiprocessing.get_context("spawn")
    for n, delay_s in enumerate((0.0, 0.005, 0.02, 0.05, 0.2)):
        worker = spawn.Process(
            target=record_and_die_during_commit, args=(store.url, f"killed-{n}", delay_s)
        )
        worker.start()
        worker.join(timeout=120)
        assert worker.exitcode == -9

    per_run = dict(rows(store, "SELECT flow_run_id, count(*) FROM scores GROUP BY 1"))
    assert per_run.pop("before") == 1
    assert all(count == len(IOI_PROMPTS) for count in per_run.values()), per_run
    runs = {run for (run,) in rows(store, "SELECT flow_run_id FROM runs")} - {"before"}
    assert runs == set(per_run)  # a run row exactly when its scores are there


def test_history_as_of_a_snapshot_or_a_time_shows_the_lake_as_it_was(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = new_lake(postgres, tmp_path, "travel")
    record_run(store, run_info("night-1"), [score(transcoder(OLD_CLT), "p", 0.7, 0.9)])
    first = lake_snapshots(store)[0]
    record_run(
        store,
        run_info("night-2", FIRST_NIGHT + timedelta(days=1)),
        [score(transcoder(OLD_CLT), "p", 0.8, 0.9, created_at=FIRST_NIGHT + timedelta(days=1))],
    )

    assert [r["flow_run_id"] for r in queries.history(store)] == ["night-2", "night-1"]
    at_snapshot = queries.history(store, as_of=AsOf(snapshot=first["snapshot_id"]))
    at_time = queries.history(store, as_of=parse_as_of(str(first["snapshot_time"])))
    assert [r["flow_run_id"] for r in at_snapshot] == ["night-1"]
    assert at_time == at_snapshot
    with pytest.raises(StorageError, match="has no snapshot 9999: its newest is"):
        queries.history(store, as_of=AsOf(snapshot=9999))


def test_as_of_on_the_embedded_file_is_refused_clearly(tmp_path: Path) -> None:
    populate(tmp_path / "scores.duckdb", nights=1)
    with pytest.raises(StorageError, match="keeps none"):
        queries.history(tmp_path / "scores.duckdb", as_of=AsOf(snapshot=1))


def test_a_lost_data_file_makes_history_fail_clearly_never_answer_wrongly(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = new_lake(postgres, tmp_path, "lost")
    populate(store, nights=2)  # type: ignore[arg-type]
    with lake.connect(store, read_only=False) as con:  # small writes are inlined in the catalog
        con.execute(f"CALL ducklake_flush_inlined_data('{lake.CATALOG}')")
    assert store.data_path is not None
    score_files = glob.glob(str(store.data_path / "main" / "scores" / "*.parquet"))
    assert score_files
    os.remove(score_files[0])

    with pytest.raises(StorageError, match=r"is damaged: its data file .* is missing"):
        queries.history(store)


def test_a_lake_nobody_wrote_reads_as_no_history_and_the_flow_s_lookups_as_empty(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    store = LakeStore(postgres.create_database("unwritten"))
    with pytest.raises(NoHistoryError, match="no score history in ducklake:postgres:"):
        queries.history(store)
    assert queries.latest_transcoder(store, OLD_CLT) is None
    assert queries.previous_suite_run_scores(store, "ioi", "x") is None
    assert queries.scores_of_run(store, "x") == []


def test_a_new_lake_without_a_data_path_and_an_unreachable_catalog_fail_in_one_line(
    postgres: PostgresServer,
) -> None:
    fresh = LakeStore(postgres.create_database("no_data_path"))
    with pytest.raises(StorageError, match="set TRACERFLOW_LAKE_DATA_PATH"):
        record_run(fresh, run_info("r"), [])
    down = parse_store("ducklake:postgres:dbname=x host=127.0.0.1 port=1 user=u password=sekrit")
    with pytest.raises(StorageError) as raised:
        queries.history(down)
    message = str(raised.value)
    assert "cannot reach the lake's PostgreSQL catalog" in message
    assert "sekrit" not in message and "password=***" in message
    assert "\n" not in message


def test_store_copy_moves_a_file_into_a_lake_and_back_losing_nothing(
    postgres: PostgresServer, tmp_path: Path, histories: tuple[FileStore, LakeStore]
) -> None:
    file_store = histories[0]
    store = new_lake(postgres, tmp_path, "copied")
    first = copy_history(file_store, store)
    assert {r.table: r.added for r in first} == {
        "transcoders": 3, "models": 1, "prompts": 5, "runs": 6, "scores": 49,
        "transcoder_metrics": 0, "subgraphs": 1,
    }  # fmt: skip
    assert all(r.target_rows == r.source_rows and not r.columns_differing for r in first)
    assert all(r.added == 0 for r in copy_history(file_store, store))  # a second copy

    back = FileStore(tmp_path / "back.duckdb")
    copy_history(store, back)
    for table, _ in TABLES:
        ordered = f"SELECT * FROM {table} ORDER BY ALL"
        assert rows(back, ordered) == rows(file_store, ordered), table


def test_store_copy_refuses_a_target_whose_rows_differ_from_the_source(
    tmp_path: Path, histories: tuple[FileStore, LakeStore]
) -> None:
    file_store = histories[0]
    target = tmp_path / "target.duckdb"
    copy_history(file_store, target)
    with duckdb.connect(str(target)) as con:
        con.execute("UPDATE scores SET replacement_score = 0.5 WHERE flow_run_id = 'smoke-1'")
    with pytest.raises(StorageError, match="scores: 49 source rows, 49 in the target, columns "
                       "differing: replacement_score"):  # fmt: skip
        copy_history(file_store, target)
    with pytest.raises(StorageError, match="same store"):
        copy_history(file_store, file_store.path)


@pytest.fixture
def read_only_folder(tmp_path: Path) -> Iterator[Path]:
    """A folder not even root can write: a read-only tmpfs."""
    with mounted_tmpfs(tmp_path / "read-only", "ro,size=1m") as folder:
        yield folder


@pytest.mark.parametrize("problem", ["missing", "a file", "read-only"])
def test_a_bad_data_path_is_refused_before_the_lake_records_it(
    postgres: PostgresServer, tmp_path: Path, problem: str, request: pytest.FixtureRequest
) -> None:
    """DuckLake writes a new lake's data path into its catalog at the first ATTACH, even when the
    write then fails, and refuses any other path after that: a bad path is refused before it,
    so the run with the corrected path records into the same lake."""
    bad = {
        "missing": tmp_path / "no-such-folder",
        "a file": tmp_path / "a-file",
        "read-only": None,
    }[problem] or request.getfixturevalue("read_only_folder")
    if problem == "a file":
        bad.write_text("")
    conninfo = postgres.create_database(f"bad_path_{problem.replace(' ', '_').replace('-', '_')}")

    with pytest.raises(StorageError, match=f"the lake's data path {bad}"):
        record_run(LakeStore(conninfo, bad), run_info("first"), [])

    good = tmp_path / "lake-data"
    good.mkdir()
    assert record_run(LakeStore(conninfo, good), run_info("second"), []) == 0
    with reading(LakeStore(conninfo, good)) as con:
        assert con.execute("SELECT flow_run_id FROM runs").fetchall() == [("second",)]


@pytest.mark.parametrize(
    "message",
    [
        'IO Error: Unable to connect to Postgres at "host=127.0.0.1 port=1"',
        "could not connect to server: Connection refused",
        'Failed to get table information from DuckLake: Failed to prepare COPY "COPY (SELECT'
        ' ...": server closed the connection unexpectedly\n\tThis probably means the server'
        " terminated abnormally",
        "FATAL:  terminating connection due to administrator command",
        "no connection to the server",
    ],
)
def test_a_catalog_lost_before_or_during_a_query_is_unreachable_not_bad_input(
    message: str,
) -> None:
    # The issue-24 replay stopped PostgreSQL in the middle of `history`: a connection lost
    # mid-query exited 2 ("change your input") with DuckLake's raw text.
    assert lake.is_unreachable(duckdb.Error(message))
    assert not lake.is_unreachable(duckdb.Error("Catalog Error: Table with name x does not exist"))
