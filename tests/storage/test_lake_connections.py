"""A lake opened once per process and reused (the extensions loaded once, the lake attached
once), and writers that take turns on a PostgreSQL advisory lock which a killed writer never
keeps: on the session's PostgreSQL, with counted opens rather than timings."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest

from tests.postgres import PostgresServer
from tests.storage import builders
from tests.storage.builders import OLD_CLT, run_info, score, transcoder
from tracerflow.errors import StorageError
from tracerflow.storage import lake, queries
from tracerflow.storage.database import record_run
from tracerflow.storage.store import LakeStore, parse_store


def counted(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[int]:
    """Replace ``module.name`` by a wrapper that counts its calls; the list's length is the
    count."""
    calls: list[int] = []
    original: Callable[..., Any] = getattr(module, name)

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counting)
    return calls


@pytest.fixture(scope="module")
def populated(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> LakeStore:
    """One lake for the module, one night of history in it; each test adds runs of its own."""
    store = LakeStore(postgres.create_database("shared_connections"), tmp_path_factory.mktemp("d"))
    builders.populate(store, nights=1)  # type: ignore[arg-type]
    lake.forget_all()  # populate's writer: each test counts from a process with no connection
    return store


def database_name(store: LakeStore) -> str:
    return store.conninfo.split("dbname=", 1)[1].split()[0]


def n_runs(store: LakeStore) -> int:
    return int(queries.run_sql(store, "SELECT count(*) FROM runs")[1][0][0])


def test_a_process_loads_the_extensions_and_attaches_a_lake_once_for_many_reads(
    populated: LakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    attaches = counted(monkeypatch, lake, "attach")
    loads = counted(monkeypatch, lake, "new_connection")
    expected = n_runs(populated)
    answers: list[int] = []

    def page() -> None:  # the viewer serves pages from several threads
        answers.append(len(queries.graph_index(populated)))

    for _ in range(3):  # the CLI's and the flow's several queries
        queries.history(populated)
        queries.transcoder_summary(populated)
        queries.latest_transcoder(populated, OLD_CLT)
    threads = [threading.Thread(target=page) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert (len(loads), len(attaches)) == (1, 1)
    assert len(answers) == 4 and len(set(answers)) == 1 and answers[0] > 0
    # The shared reader sees what a writer commits after it opened (here, this process's own
    # writer: one more connection, loading the extensions once more).
    record_run(populated, run_info("later"), [score(transcoder(OLD_CLT), "p", 0.7, 0.9)])
    assert n_runs(populated) == expected + 1
    assert (len(loads), len(attaches)) == (2, 2)


def test_a_shared_reader_whose_sessions_were_ended_is_reopened_by_a_later_read(
    populated: LakeStore, postgres: PostgresServer
) -> None:
    expected = n_runs(populated)
    postgres.psql(
        "postgres",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        f"WHERE datname = '{database_name(populated)}'",
    )
    try:
        first = n_runs(populated)
    except StorageError as error:  # one line, and the broken connection is let go
        assert "\n" not in str(error)
        first = n_runs(populated)
    assert first == expected


def test_a_second_writer_waits_for_the_first_one_s_turn(
    populated: LakeStore,
) -> None:
    holder = lake.open_writer(populated)  # a connection of its own: a PostgreSQL session apart
    try:
        turn = lake.writers_turn(holder, populated, timeout_s=10)
        with turn, pytest.raises(StorageError, match="another writer has held the lake"):
            record_run(populated, run_info("waited"), [], timeout_s=0.5)
        assert record_run(
            populated, run_info("waited"), [score(transcoder(OLD_CLT), "p", 0.7, 0.9)]
        )
    finally:
        holder.close()
    runs = queries.run_sql(populated, "SELECT count(*) FROM runs WHERE flow_run_id = 'waited'")
    assert runs[1] == [(1,)]


def hold_the_turn_until_killed(url: str, holding: Any) -> None:
    """Take the writers' turn, say so, and wait to be killed."""
    store = parse_store(url)
    assert isinstance(store, LakeStore)
    con = lake.open_writer(store)
    with lake.writers_turn(con, store, timeout_s=60):
        holding.set()
        threading.Event().wait(120)


def test_a_writer_killed_while_it_holds_the_turn_does_not_keep_it(
    populated: LakeStore, postgres: PostgresServer
) -> None:
    spawn = multiprocessing.get_context("spawn")
    holding = spawn.Event()
    worker = spawn.Process(target=hold_the_turn_until_killed, args=(populated.url, holding))
    worker.start()
    try:
        assert holding.wait(120)
        held = postgres.psql(
            database_name(populated),
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted",
        )
        assert held == "1"
    finally:
        worker.kill()
        worker.join(60)
    assert worker.exitcode == -9
    records = [score(transcoder(OLD_CLT), prompt, 0.7, 0.9) for prompt in builders.IOI_PROMPTS]
    assert record_run(populated, run_info("after-kill"), records, timeout_s=30) == len(records)


def test_the_viewer_s_index_is_read_again_only_when_the_lake_has_a_new_snapshot(
    populated: LakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = queries.graph_index(populated)
    reads = counted(monkeypatch, queries, "_dicts")
    assert queries.graph_index(populated) == first  # nothing written since: not read again
    assert len(reads) == 0

    later = builders.FIRST_NIGHT + timedelta(days=30)
    new = score(transcoder(OLD_CLT), "a new prompt", 0.5, 0.6, created_at=later, slug="new-graph")
    record_run(populated, run_info("with-a-new-graph"), [new])
    after = queries.graph_index(populated)
    assert len(reads) == 1
    assert [entry["slug"] for entry in after] == ["new-graph"] + [e["slug"] for e in first]
    assert after[1:] == first
