"""The score store under load: a DuckLake on PostgreSQL against the embedded DuckDB file.

Starts its own PostgreSQL (``tests/postgres.py``: PostgreSQL 15, fsync off) and measures, in one
run, side by side:

  1. writes: a history of ``--runs`` runs (default 1 000; each a toy-nightly-sized run: 3
     transcoders × 6 prompts = 18 score rows), each its own transaction (a lake snapshot each),
     into a file and into a lake; the last ``--timed`` of them through ``record_run`` as a flow
     run writes (one transaction, on the process's shared lake connection, which the first of
     them opens), file and lake alternating so both see the same machine: the first write and
     the median and p95 seconds a write, as a ratio;
  2. queries on that same 1 000-run history: ``history``, ``transcoder_summary``, ``graph_index``
     and a ``sql`` aggregate: the first query of a process (a lake's connection opened for it)
     and the steady state (median of ``--repeats`` after it, on the process's shared
     connection), as ratios; then again on the lake after
     DuckLake's own maintenance (``ducklake_flush_inlined_data``: small writes are inlined in
     the catalog until flushed to Parquet; ``ducklake_merge_adjacent_files``: a run's small
     files merged);
  3. concurrent writers: ``--writers`` processes × ``--runs-each`` runs at once, into one new
     lake and into one new file: rows/s, the p95 commit latency (a write's wall time: its wait
     for the writers' lock, and any conflict retried inside it) and a check that every row
     landed exactly once;
  4. faults: ``--kills`` writers killed with SIGKILL at a random moment of their write, once
     their lake is open (some before their turn, some in it, some after COMMIT) while others
     write: no run is visible in part.

    python benchmarks/store.py                              # the figures in docs/operations.md
    python benchmarks/store.py --runs 200 --repeats 3      # quicker
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.postgres import PostgresServer
from tests.storage.builders import run_info, score, transcoder
from tracerflow.storage import lake, queries
from tracerflow.storage.database import _insert_run, open_database, record_run
from tracerflow.storage.records import ScoreRecord
from tracerflow.storage.store import FileStore, LakeStore, Store, parse_store

TRANSCODERS = (("toy-clt", "clt"), ("toy-plt", "plt"), ("toy-jumprelu-clt", "clt"))
PROMPTS = tuple(
    f"prompt {i}: Mary and John went to the store, John gave a drink to" for i in range(6)
)
START = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000, help="runs in the history (part 1-2)")
    parser.add_argument("--timed", type=int, default=50, help="of them, written by record_run")
    parser.add_argument("--repeats", type=int, default=5, help="query repeats (median)")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--runs-each", type=int, default=25)
    parser.add_argument("--kills", type=int, default=6)
    parser.add_argument(
        "--parts", default="1,2,3,4", help="which parts to run (3 and 4 stand alone; 2 needs 1)"
    )
    return parser.parse_args()


def run_records(number: int) -> tuple[Any, list[ScoreRecord]]:
    """Run ``number`` of a nightly toy suite: 18 rows, scores drifting a little each night."""
    at = START + timedelta(hours=number)
    records = [
        score(
            transcoder(source, kind, content_hash=f"weights-{source}"),
            prompt,
            round(0.7 + 0.01 * (number % 7) - 0.02 * p, 6),
            0.9,
            created_at=at + timedelta(seconds=p),
            slug=f"{source}-{p}",
        )
        for source, kind in TRANSCODERS
        for p, prompt in enumerate(PROMPTS)
    ]
    return run_info(f"run-{number:05d}", at, status="completed", suite_name="toy"), records


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def build_history(store: Store, runs: int) -> None:
    """Runs 0..runs-1, each in its own transaction on one connection: the statements
    ``record_run`` makes, without a new connection (and extension load) a run."""
    con = open_database(store)
    try:
        for number in range(runs):
            run, records = run_records(number)
            con.execute("BEGIN TRANSACTION")
            _insert_run(con, run, records)
            con.execute("COMMIT")
    finally:
        con.close()


def timed_writes(stores: list[Store], first: int, count: int) -> list[list[float]]:
    """``record_run`` of runs first.., the stores taking turns; seconds a write, per store."""
    seconds: list[list[float]] = [[] for _ in stores]
    for number in range(first, first + count):
        run, records = run_records(number)
        for i, store in enumerate(stores):
            began = time.perf_counter()
            record_run(store, run, records)
            seconds[i].append(time.perf_counter() - began)
    return seconds


QUERIES: dict[str, Callable[[Store], Any]] = {
    "history (every score)": queries.history,
    "history --since (one night)": lambda s: queries.history(s, since="2026-01-02"),
    "transcoder_summary": queries.transcoder_summary,
    "graph_index (viewer)": queries.graph_index,
    "sql aggregate": lambda s: queries.run_sql(
        s, "SELECT transcoder_source, avg(replacement_score) FROM scores_wide GROUP BY 1"
    ),
}


def time_queries(
    stores: list[Store], repeats: int
) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    """Seconds of each query on each store, the stores taking turns: (first, steady). First: the
    query in a process that has no connection to the store yet (a lake's shared connections are
    closed before it, so it loads the extensions and attaches, as a new CLI process does);
    steady: the median of ``repeats`` after it (the viewer's pages, a worker's lookups)."""
    first: list[dict[str, float]] = [{} for _ in stores]
    samples: list[dict[str, list[float]]] = [{name: [] for name in QUERIES} for _ in stores]
    for name, query in QUERIES.items():
        for i, store in enumerate(stores):
            lake.forget_all()
            began = time.perf_counter()
            query(store)
            first[i][name] = time.perf_counter() - began
    for _ in range(repeats):
        for name, query in QUERIES.items():
            for i, store in enumerate(stores):
                began = time.perf_counter()
                query(store)
                samples[i][name].append(time.perf_counter() - began)
    steady = [{name: statistics.median(v) for name, v in per.items()} for per in samples]
    return first, steady


# --- concurrent writers (spawned processes) -------------------------------------------------


def writer(url: str, first: int, count: int, barrier: Any, latencies: Any) -> None:
    store = parse_store(url)
    barrier.wait()
    for number in range(first, first + count):
        run, records = run_records(number)
        began = time.perf_counter()
        record_run(store, run, records, timeout_s=600)
        latencies.append(time.perf_counter() - began)


def concurrent(store: Store, writers: int, runs_each: int) -> tuple[float, list[float]]:
    spawn = multiprocessing.get_context("spawn")
    manager = spawn.Manager()
    barrier, latencies = manager.Barrier(writers + 1), manager.list()
    url = store.url if isinstance(store, LakeStore) else str(store.path)
    processes = [
        spawn.Process(
            target=writer, args=(url, 100_000 + w * runs_each, runs_each, barrier, latencies)
        )
        for w in range(writers)
    ]
    for process in processes:
        process.start()
    barrier.wait()
    began = time.perf_counter()
    for process in processes:
        process.join()
    elapsed = time.perf_counter() - began
    assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    return elapsed, list(latencies)


def exactly_once(store: Store, runs: int) -> str:
    (row,) = queries.run_sql(
        store,
        "SELECT count(*), count(DISTINCT score_id), count(DISTINCT flow_run_id) FROM scores",
    )[1]
    rows, distinct, run_ids = row
    expected = runs * len(TRANSCODERS) * len(PROMPTS)
    ok = rows == distinct == expected and run_ids == runs
    return f"{rows} rows, {distinct} distinct, {run_ids} runs: {'exactly once' if ok else 'WRONG'}"


# --- faults ---------------------------------------------------------------------------------


def killed_writer(url: str, number: int, delay_s: float) -> None:
    """Record one run; SIGKILL this process ``delay_s`` after the write starts. The lake is
    opened first (by recording an empty run), so that the kill lands in the write itself:
    before the turn, waiting for it, in it, or after COMMIT, not while the extensions load."""
    store = parse_store(url)
    record_run(store, run_info(f"open-{number}"), [])
    run, records = run_records(number)
    threading.Timer(delay_s, lambda: os.kill(os.getpid(), 9)).start()
    record_run(store, run, records, timeout_s=600)
    time.sleep(60)  # recorded before the kill: wait for it


def faults(store: LakeStore, kills: int, write_s: float) -> str:
    spawn = multiprocessing.get_context("spawn")
    rng = random.Random(0)
    victims = [
        spawn.Process(
            target=killed_writer, args=(store.url, 200_000 + k, rng.uniform(0.3, 4.0) * write_s)
        )
        for k in range(kills)
    ]
    bystanders = [
        spawn.Process(target=writer_alone, args=(store.url, 300_000 + k)) for k in range(kills)
    ]
    for process in victims + bystanders:
        process.start()
    for process in victims + bystanders:
        process.join()
    per_run = queries.run_sql(
        store,
        "SELECT flow_run_id, count(*) FROM scores WHERE flow_run_id >= 'run-200000' "
        "GROUP BY 1 ORDER BY 1",
    )[1]
    partial = [(run, n) for run, n in per_run if n != len(TRANSCODERS) * len(PROMPTS)]
    killed_landed = sum(1 for run, _ in per_run if run < "run-300000")
    bystanders_landed = sum(1 for run, _ in per_run if run >= "run-300000")
    return (
        f"{kills} writers killed (SIGKILL) mid-write: {killed_landed} of their runs committed "
        f"before the kill, {kills - killed_landed} left nothing; {bystanders_landed}/{kills} "
        f"concurrent writers landed; runs visible in part: {len(partial)}"
    )


def writer_alone(url: str, number: int) -> None:
    run, records = run_records(number)
    record_run(parse_store(url), run, records, timeout_s=600)


def main() -> None:
    args = parse_args()
    folder = Path(tempfile.mkdtemp(prefix="tracerflow-store-bench-"))
    with PostgresServer() as postgres:
        parts = {int(part) for part in args.parts.split(",")}
        lake_writes: list[float] = []
        if 1 in parts:
            lake_writes = history_and_queries(args, postgres, folder, 2 in parts)
        if 3 in parts:
            concurrent_writers(args, postgres, folder)
        if 4 in parts:
            print(f"4. faults: {args.kills} writers killed mid-write beside {args.kills} others")
            fault_lake = LakeStore(
                postgres.create_database("faults"), new_data_folder(folder / "faults-lake")
            )
            record_run(fault_lake, run_info("create"), [])
            if not lake_writes:  # how long a write takes, to time the kills
                lake_writes = timed_writes([fault_lake], 150_000, 3)[0]
            print("   " + faults(fault_lake, args.kills, statistics.median(lake_writes)))


def new_data_folder(path: Path) -> Path:
    """A lake's data folder, made first: a writer refuses a missing one (a missing mount)."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def history_and_queries(
    args: argparse.Namespace, postgres: PostgresServer, folder: Path, queries_too: bool
) -> list[float]:
    """Parts 1 and 2; returns the lake's timed write seconds."""
    file_store = FileStore(folder / "history.duckdb")
    lake_store = LakeStore(
        postgres.create_database("history"), new_data_folder(folder / "history-lake")
    )
    built = args.runs - args.timed
    print(f"1. a history of {args.runs} runs of {len(TRANSCODERS) * len(PROMPTS)} rows")
    for store in (file_store, lake_store):
        began = time.perf_counter()
        build_history(store, built)
        print(f"   {store.describe()}: {built} runs in {time.perf_counter() - began:.0f} s")
    file_writes, lake_writes = timed_writes([file_store, lake_store], built, args.timed)
    print(f"   the last {args.timed} through record_run, file and lake taking turns:")
    first = f"file {file_writes[0] * 1000:7.1f} ms  lake {lake_writes[0] * 1000:7.1f} ms"
    print(f"   first write: {first}  lake/file ×{lake_writes[0] / file_writes[0]:.1f}")
    for label, stat in (("median", statistics.median), ("p95", lambda v: percentile(v, 0.95))):
        f, lk = stat(file_writes), stat(lake_writes)
        times = f"file {f * 1000:7.1f} ms  lake {lk * 1000:7.1f} ms"
        print(f"   {label} write: {times}  lake/file ×{lk / f:.1f}")

    if not queries_too:
        return lake_writes
    print(
        f"2. queries on the {args.runs}-run history (first query of a process; median of "
        f"{args.repeats} after it)"
    )
    (file_first, lake_first), (file_q, lake_q) = time_queries(
        [file_store, lake_store], args.repeats
    )
    lake.forget_all()
    with lake.connect(lake_store, read_only=False) as con:
        began = time.perf_counter()
        # DuckLake's own maintenance: inlined rows to Parquet, then small files merged.
        con.execute("CALL ducklake_flush_inlined_data('lake')")
        con.execute("CALL ducklake_merge_adjacent_files('lake')")
        flush_s = time.perf_counter() - began
    (_, _), (file_again, flushed_q) = time_queries([file_store, lake_store], args.repeats)
    header = ("file", "lake 1st", "ratio", "file", "lake", "ratio", "compacted", "ratio")
    print(f"   {'query':28s} " + " ".join(f"{h:>9s}" for h in header))
    print(f"   {'':28s} {'first query':^29s} {'steady state':^29s} {'steady, compacted':^19s}")
    for name in QUERIES:
        cells = (*ratio_cells(file_first[name], lake_first[name]),)
        cells += ratio_cells(file_q[name], lake_q[name])
        cells += ratio_cells(file_again[name], flushed_q[name])[1:]
        print(f"   {name:28s} " + " ".join(f"{c:>9s}" for c in cells))
    print(f"   (compacting: flush inlined rows, merge adjacent files, took {flush_s:.1f} s)")
    return lake_writes


def ratio_cells(file_s: float, lake_s: float) -> tuple[str, str, str]:
    """A file time, a lake time and their ratio, as table cells."""
    return f"{file_s * 1000:7.1f}ms", f"{lake_s * 1000:7.1f}ms", f"×{lake_s / file_s:5.1f}"


def concurrent_writers(args: argparse.Namespace, postgres: PostgresServer, folder: Path) -> None:
    """Part 3."""
    total = args.writers * args.runs_each
    rows = total * len(TRANSCODERS) * len(PROMPTS)
    print(f"3. {args.writers} writer processes × {args.runs_each} runs at once ({rows} rows)")
    for label, store in (
        (
            "lake",
            LakeStore(
                postgres.create_database("concurrent"), new_data_folder(folder / "concurrent-lake")
            ),
        ),
        ("file", FileStore(folder / "concurrent.duckdb")),
    ):
        record_run(store, run_info("create"), [])  # a new store, created before the clock
        elapsed, latencies = concurrent(store, args.writers, args.runs_each)
        rate = f"{rows / elapsed:6.0f} rows/s, {total / elapsed:5.1f} runs/s"
        p50, p95 = statistics.median(latencies), percentile(latencies, 0.95)
        latency = f"commit p50 {p50:.2f} s p95 {p95:.2f} s"
        print(f"   {label}: {elapsed:6.1f} s, {rate}, {latency}; {exactly_once(store, total)}")


if __name__ == "__main__":
    main()
