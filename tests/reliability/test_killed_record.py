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
from pathlib import Path

import duckdb
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    TaskRunFilter,
    TaskRunFilterName,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType

from tests.reliability.harness import run_cli
from tests.tmpfs import mounted_tmpfs
from tracerflow.storage.database import open_database

PROMPT = "Mary and John went to the store, Jon gave a drink to"
RUN = ["--preset", "toy-clt", "--prompt", PROMPT]


def record_task_running() -> bool:
    """Whether a ``record`` task run is running on the session's Prefect API."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                name=TaskRunFilterName(like_="record"),
                state=TaskRunFilterState(type=TaskRunFilterStateType(any_=[StateType.RUNNING])),
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


def test_a_run_killed_while_it_records_leaves_the_next_run_free(
    prefect_api: None, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "home"
    home.mkdir()
    database = home / "scores.duckdb"
    open_database(database).close()  # an empty tracerflow database
    holder = hold_open(database)  # so the run below waits in its record step
    env = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TRACERFLOW_HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "HF_HUB_OFFLINE": "1",
    }
    killed = subprocess.Popen(
        [sys.executable, "-m", "tracerflow.cli", "run", *RUN],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes every child with it
    )
    try:
        deadline = time.monotonic() + 300
        while not record_task_running():
            assert killed.poll() is None, "the run ended before it reached its record step"
            assert time.monotonic() < deadline, "the run never reached its record step"
            time.sleep(0.5)
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


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs, for the test to fill (where none can be mounted, skipped: the storage
    tests' ENOSPC hook covers the write itself)."""
    with mounted_tmpfs(tmp_path / "small-disk", "size=2m") as mount_point:
        yield mount_point


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
    assert last.endswith("; a re-run will record it (its finished stages are cached)")
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
