"""record_run: one transaction per flow run, idempotent, all-or-nothing, safe under concurrency."""

from __future__ import annotations

import contextlib
import errno
import multiprocessing
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tracerflow.errors import StorageError, StoreBusyError
from tracerflow.storage import ScoreRecord, record_run
from tracerflow.storage.database import open_reader, write_file
from tracerflow.storage.store import FileStore

from .builders import (
    IOI_PROMPTS,
    OLD_CLT,
    PLT,
    record_run_and_die_mid_write,
    record_run_at_barrier,
    run_info,
    score,
    snapshot,
    transcoder,
)


def two_by_two(replacement: float = 0.7) -> list[ScoreRecord]:
    return [
        score(transcoder(source, kind), prompt, replacement, 0.9)
        for source, kind in ((OLD_CLT, "clt"), (PLT, "plt"))
        for prompt in IOI_PROMPTS[:2]
    ]


def count(db_path: Path, table: str) -> int:
    with duckdb.connect(str(db_path), read_only=True) as con:
        return con.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_a_run_lands_one_score_row_per_record_and_one_row_per_entity(db_path: Path) -> None:
    added = record_run(db_path, run_info("run-1"), two_by_two())

    assert added == 4
    tables = ("runs", "transcoders", "models", "prompts", "scores")
    assert {table: count(db_path, table) for table in tables} == {
        "runs": 1, "transcoders": 2, "models": 1, "prompts": 2, "scores": 4,
    }  # fmt: skip


def test_a_second_run_reuses_the_rows_of_known_transcoders_models_and_prompts(
    db_path: Path,
) -> None:
    record_run(db_path, run_info("run-1"), two_by_two())
    record_run(db_path, run_info("run-2"), two_by_two(replacement=0.8))

    assert count(db_path, "transcoders") == 2
    assert count(db_path, "prompts") == 2
    assert count(db_path, "scores") == 8


def test_recording_the_same_run_again_adds_nothing_and_replaces_nothing(db_path: Path) -> None:
    record_run(db_path, run_info("run-1"), two_by_two(replacement=0.7))
    before = snapshot(db_path)

    added = record_run(db_path, run_info("run-1", status="completed"), two_by_two(0.1))

    assert added == 0
    assert snapshot(db_path) == before


def test_a_failure_between_statements_leaves_no_part_of_the_run(db_path: Path) -> None:
    record_run(db_path, run_info("run-1"), two_by_two())
    before = snapshot(db_path)
    # The third record repeats the first one's key: its INSERT fails after the run row and two
    # scores were written inside the transaction.
    records = two_by_two()[:2]
    records.append(records[0])

    with pytest.raises(StorageError, match="nothing of it was written"):
        record_run(db_path, run_info("run-2"), records)

    assert snapshot(db_path) == before


def test_a_process_killed_in_the_middle_of_a_write_leaves_no_part_of_the_run(
    db_path: Path,
) -> None:
    record_run(db_path, run_info("run-1"), two_by_two())
    before = snapshot(db_path)

    worker = multiprocessing.get_context("spawn").Process(
        target=record_run_and_die_mid_write, args=(str(db_path),)
    )
    worker.start()
    worker.join(timeout=60)

    assert worker.exitcode == 3  # it died inside record_run, after some INSERTs
    assert snapshot(db_path) == before


def test_three_runs_recorded_at_once_from_three_processes_all_land(db_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(3)
    workers = [
        spawn.Process(target=record_run_at_barrier, args=(str(db_path), n, barrier))
        for n in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)

    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    with duckdb.connect(str(db_path), read_only=True) as con:
        per_run = con.execute(
            "SELECT flow_run_id, count(*) FROM scores GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert per_run == [(f"concurrent-{n}", len(IOI_PROMPTS)) for n in range(3)]


@contextlib.contextmanager
def reader_in_another_process(
    db_path: Path, hold_s: float, read_only: bool = True
) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the database open, read-only (DuckDB then refuses writers) or
    for writing (then it refuses everyone)."""
    code = (
        "import duckdb, sys, time\n"
        f"con = duckdb.connect({str(db_path)!r}, read_only={read_only})\n"
        "print('ready', flush=True)\n"
        f"time.sleep({hold_s})\n"
    )
    reader = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert reader.stdout is not None and reader.stdout.readline().strip() == "ready"
        yield reader
    finally:
        reader.kill()
        reader.wait()


def test_a_writer_waits_for_a_reader_in_another_process_to_let_go(db_path: Path) -> None:
    record_run(db_path, run_info("run-1"), two_by_two())

    with reader_in_another_process(db_path, hold_s=1.5):
        started = time.monotonic()
        added = record_run(db_path, run_info("run-2"), two_by_two(), timeout_s=30)
        waited = time.monotonic() - started

    assert added == 4
    assert waited > 0.5


def test_a_writer_gives_up_with_an_actionable_error_when_the_file_stays_locked(
    db_path: Path,
) -> None:
    record_run(db_path, run_info("run-1"), two_by_two())

    with (
        reader_in_another_process(db_path, hold_s=30) as reader,
        pytest.raises(StorageError, match=rf"process {reader.pid} has held it .* try again"),
    ):
        record_run(db_path, run_info("run-2"), two_by_two(), timeout_s=0.5)


def test_a_reader_kept_out_by_a_writer_gives_up_saying_a_later_try_may_work(
    db_path: Path,
) -> None:
    # A held lock is not bad input: exit 1 ("try again"), not 2 ("change it"); found by the
    # issue-24 replay, where `history` beside a writing process exited 2.
    record_run(db_path, run_info("run-1"), two_by_two())

    with (
        reader_in_another_process(db_path, hold_s=30, read_only=False) as writer,
        pytest.raises(
            StoreBusyError, match=rf"process {writer.pid} has held it .* try again"
        ) as raised,
    ):
        open_reader(db_path, timeout_s=0.5)
    assert raised.value.exit_code == 1


def test_a_writer_killed_mid_write_never_blocks_the_next(db_path: Path) -> None:
    """The writer lock dies with its process: a run SIGKILLed while it writes leaves nothing of
    its write, and the next writer records at once (a lock that outlived it would make it wait
    its whole timeout, then fail)."""
    record_run(db_path, run_info("run-1"), two_by_two())
    code = (
        "import sys, time\n"
        "from tracerflow.storage.database import write_file\n"
        "from tracerflow.storage.store import FileStore\n"
        "def hold(con):\n"
        '    con.execute("DELETE FROM scores")\n'  # a change the kill must undo
        "    print('ready', flush=True)\n"
        "    time.sleep(120)\n"
        "from pathlib import Path\n"
        f"write_file(FileStore(Path({str(db_path)!r})), hold)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        writer.kill()

    added = record_run(db_path, run_info("run-2"), two_by_two(), timeout_s=10)

    assert added == 4
    assert count(db_path, "scores") == 8  # run-1's rows, untouched by the killed write


def test_a_write_that_fails_on_a_full_disk_leaves_the_next_write_free(db_path: Path) -> None:
    """ENOSPC in the middle of a write (a hook in the write: the disk fills while the run is
    written) rolls it back and lets go of the lock; the next write records at once."""
    record_run(db_path, run_info("run-1"), two_by_two())

    def disk_full(con: Any) -> int:
        con.execute("DELETE FROM scores")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left on device"):
        write_file(FileStore(db_path), disk_full)

    assert record_run(db_path, run_info("run-2"), two_by_two(), timeout_s=1) == 4
    assert count(db_path, "scores") == 8


def test_a_record_with_an_unknown_status_is_refused() -> None:
    with pytest.raises(StorageError, match="status must be one of"):
        score(transcoder(), IOI_PROMPTS[0], 0.7, 0.9, status="maybe")


def test_a_first_write_that_fails_leaves_no_database_behind(db_path: Path) -> None:
    """A database the failed write created is removed (on a full disk DuckDB leaves a file it
    could not finish, which every later open refuses); an existing one is kept."""

    def disk_full(con: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError):
        write_file(FileStore(db_path), disk_full)
    assert not db_path.exists() and not db_path.with_name(db_path.name + ".wal").exists()

    record_run(db_path, run_info("run-1"), two_by_two())
    with pytest.raises(OSError):
        write_file(FileStore(db_path), disk_full)
    assert count(db_path, "scores") == 4  # an existing database stays, untouched
