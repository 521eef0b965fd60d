"""A run killed while it records (SIGKILL, a full disk) never blocks the home: the next run
records at once. The record step's only lock is the file's OS lock, which dies with its process;
the Prefect concurrency slot it used to take outlived a killed run, and every later run then
waited 600 s per attempt and ended "not recorded"."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import duckdb
import pytest
from filelock import FileLock
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    TaskRunFilter,
    TaskRunFilterName,
    TaskRunFilterStartTime,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from tests.reliability.harness import run_cli
from tests.tmpfs import mounted_tmpfs
from tracerflow.storage.database import open_database

PROMPT = "Mary and John went to the store, Jon gave a drink to"
RUN = ["--preset", "toy-clt", "--prompt", PROMPT]


def record_task_running(since: datetime) -> bool:
    """Whether a ``record`` task run that started after ``since`` is running on the session's
    Prefect API (one of a run an earlier test killed stays "running" there for good)."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="record"),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING])),
                start_time=TaskRunFilterStartTime(after_=since),
            )
        )
    return bool(runs)


def hold_open(database: Path) -> subprocess.Popen[str]:
    """Another process holding the database open (DuckDB then refuses every writer)."""
    code = (
        "import duckdb, time\n"
        f"con = duckdb.connect({str(database)!r}, read_only=True)\n"
        "print('ready', flush=True)\n"
        "time.sleep(300)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
    return holder


def start_run(
    home: Path, arguments: list[str], output: IO[str] | int = subprocess.DEVNULL
) -> subprocess.Popen[str]:
    """``tracerflow run <arguments>`` in a fresh interpreter and a process group of its own (a
    kill of the group takes every child with it), reporting to the session's Prefect API; its
    stdout and stderr go to ``output``."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TRACERFLOW_HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "HF_HUB_OFFLINE": "1",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tracerflow.cli", "run", *arguments],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_for_its_record_step(run: subprocess.Popen[str], since: datetime) -> None:
    deadline = time.monotonic() + 300
    while not record_task_running(since):
        assert run.poll() is None, "the run ended before it reached its record step"
        assert time.monotonic() < deadline, "the run never reached its record step"
        time.sleep(0.5)


def test_a_run_killed_while_it_records_leaves_the_next_run_free(
    prefect_api: None, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    database = home / "scores.duckdb"
    open_database(database).close()  # an empty tracerflow database
    holder = hold_open(database)  # so the run below waits in its record step
    since = datetime.now(UTC)
    killed = start_run(home, RUN)
    try:
        wait_for_its_record_step(killed, since)
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait(timeout=30)
    finally:
        if killed.poll() is None:
            os.killpg(killed.pid, signal.SIGKILL)
        holder.kill()
        holder.wait()

    started = time.monotonic()
    again = run_cli(RUN, home)
    print(f"the next run took {time.monotonic() - started:.1f} s")

    assert again.returncode == 0, again.stdout + again.stderr
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT status FROM scores").fetchall() == [("ok",)]


def test_a_run_stopped_while_it_waits_for_the_writer_lock_ends_in_seconds(
    prefect_api: None, tmp_path: Path
) -> None:
    """SIGTERM (what `kill` and service managers send) while the run waits for the writer lock:
    it took 78 s while the lock was a Prefect concurrency slot; the OS lock's wait is a loop of
    short sleeps, which the signal ends at once."""
    home = tmp_path / "home"
    home.mkdir()
    tiny_corpus = tmp_path / "corpus.txt"  # the dashboards and metrics stages in a second
    tiny_corpus.write_text("Mary and John went to the store.\n")
    lock = FileLock(str(home / "scores.duckdb.lock"))  # the writers' lock, held by this test
    lock.acquire()
    corpora = ["--corpus", str(tiny_corpus), "--eval-corpus", str(tiny_corpus)]
    log = tmp_path / "run.log"  # a file, not a pipe nobody reads while the run goes on
    since = datetime.now(UTC)
    with log.open("w") as output:
        stopped = start_run(home, [*RUN, *corpora], output=output)
    try:
        wait_for_its_record_step(stopped, since)
        started = time.monotonic()
        os.kill(stopped.pid, signal.SIGTERM)
        stopped.wait(timeout=60)
        seconds = time.monotonic() - started
    finally:
        if stopped.poll() is None:
            os.killpg(stopped.pid, signal.SIGKILL)
        lock.release()
    output = log.read_text()
    print(f"the run ended {seconds:.1f} s after SIGTERM")

    assert seconds < 20, output
    assert stopped.returncode in (-signal.SIGTERM, 128 + signal.SIGTERM), output
    assert "Execution was aborted by a termination signal" in output  # what stopped it
    assert not (home / "scores.duckdb").exists()  # nothing was written


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, for the test to fill (where none can be mounted, skipped: the storage
    tests' ENOSPC hook covers the write itself)."""
    with mounted_tmpfs(tmp_path / "small-disk", "size=2m") as mount_point:
        yield mount_point


@pytest.mark.slow
def test_a_run_that_cannot_record_on_a_full_disk_leaves_the_next_run_free(
    prefect_api: None, tmp_path: Path, full_disk: Path
) -> None:
    home = tmp_path / "home"
    store = full_disk / "scores.duckdb"
    filler = full_disk / "filler"
    with filler.open("wb") as handle:  # fill the disk: every write to the store fails
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass

    full = run_cli([*RUN, "--store", str(store)], home)

    assert full.returncode == 1, full.stdout + full.stderr
    last = full.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the run was not recorded: ")
    message, _, log = last.partition(" (full log: ")
    assert message.endswith("; a re-run will record it (its finished stages are cached)")
    assert Path(log.removesuffix(")")).is_file()  # the run's whole log, named last
    table = [line for line in full.stdout.splitlines() if line.startswith("toy-clt ")]
    assert len(table) == 1 and table[0].rstrip().endswith("ok")  # the scores it computed
    assert not store.exists()  # the file the full disk cut short is gone: nothing half-written

    filler.unlink()  # the user frees space
    started = time.monotonic()
    again = run_cli([*RUN, "--store", str(store)], home)
    print(f"the next run took {time.monotonic() - started:.1f} s")

    assert again.returncode == 0, again.stdout + again.stderr
    with duckdb.connect(str(store), read_only=True) as con:
        assert con.execute("SELECT status FROM scores").fetchall() == [("ok",)]
