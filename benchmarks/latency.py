"""How long a person waits for the `tracerflow` command, measured side by side for source trees.

    python benchmarks/latency.py                              # this tree
    python benchmarks/latency.py --tree ../before --tree .    # before/after, ratios to the first
    python benchmarks/latency.py --repeats 5 --skip demo

Each measurement is a fresh `python -m tracerflow.cli ...` subprocess with PYTHONPATH=the tree, in
a fresh TRACERFLOW_HOME, offline, PREFECT_API_URL unset (as a new user runs it):
  help            `tracerflow --help`                                    target < 1 s
  run-help        `tracerflow run --help`                                target < 1 s
  first-line      a cold toy one-prompt run: until its first output line target <= 1 s
  cold-run        the same run, to its end (every stage computed)
  cached-run      the same run again in the same home: every stage cached target <= 5 s
                  (a tree whose runs leave their temporary server up a while reuses the cold
                  run's: what a person re-running a command meets)
  cached-alone    the cached run again with no server up at all (any lingering one stopped,
                  TRACERFLOW_SERVER_LINGER_S=0): it starts its own temporary server
  cached-server   the cached run again, with `tracerflow server up` running in the home (the
                  server's start is not counted; a tree that reuses it skips its own)
  demo            `tracerflow demo` in a fresh home                       target <= 30 s
Every figure is the median of --repeats runs (the trees alternate within a repeat, so load from
other jobs falls on all of them alike), with the min-max range: wall seconds, then CPU seconds
(user + system of the command and the children it waited for, a temporary Prefect server
among them; not a `server up` server's), which load from other jobs moves far less. Timings are
printed, never asserted: the machine is shared; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

PROMPT = "The cat sat on the mat"
RUN = ["run", "--preset", "toy-clt", "--prompt", PROMPT]
TARGETS = {
    "help": "< 1 s",
    "run-help": "< 1 s",
    "first-line": "<= 1 s",
    "cold-run": "",
    "cached-run": "<= 5 s",
    "cached-alone": "",
    "cached-server": "<= 5 s",
    "demo": "<= 30 s",
}
TIMEOUT_S = 900


@dataclass
class Timing:
    """Wall seconds of one command, its CPU seconds, and when its first output line came (None:
    it printed nothing)."""

    seconds: float
    cpu: float
    first_line: float | None
    returncode: int
    output: str = field(repr=False, default="")


def environment(tree: Path, home: Path, **extra: str) -> dict[str, str]:
    """The environment of one measured command: the tree first on the path, a fresh home, offline,
    no Prefect server named (the default a new user has)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "TRACERFLOW_"))}
    env.update(
        PYTHONPATH=str(tree),
        TRACERFLOW_HOME=str(home),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def timed(args: list[str], tree: Path, home: Path, **env: str) -> Timing:
    """Run ``tracerflow args`` from ``tree`` in ``home`` (``env`` added to its environment); its
    wall time and first line's time."""
    command = [sys.executable, "-m", "tracerflow.cli", *args]
    start = time.perf_counter()
    process = subprocess.Popen(
        command,
        cwd=home,
        env=environment(tree, home, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    first_line = None
    lines = []
    for raw in process.stdout:
        if first_line is None and raw.strip():
            first_line = time.perf_counter() - start
        lines.append(raw.decode(errors="replace"))
    _, status, usage = os.wait4(process.pid, 0)  # its rusage: it and its reaped children
    seconds = time.perf_counter() - start
    returncode = process.returncode = os.waitstatus_to_exitcode(status)
    if returncode != 0:
        tail = "".join(lines[-15:])
        print(f"  ! `tracerflow {' '.join(args)}` from {tree} exited {returncode}:\n{tail}")
    cpu = usage.ru_utime + usage.ru_stime
    return Timing(seconds, cpu, first_line, returncode, "".join(lines))


def measure_tree(tree: Path, skip: set[str], scratch: Path) -> dict[str, Timing]:
    """One repeat of every measurement for ``tree``, each in a fresh home under ``scratch``."""
    found: dict[str, Timing] = {}

    def home() -> Path:
        return Path(tempfile.mkdtemp(prefix="home-", dir=scratch))

    if "help" not in skip:
        found["help"] = timed(["--help"], tree, home())
    if "run-help" not in skip:
        found["run-help"] = timed(["run", "--help"], tree, home())
    if not {"first-line", "cold-run", "cached-run", "cached-alone", "cached-server"} <= skip:
        run_home = home()
        try:
            cold = timed(RUN, tree, run_home)
            if cold.first_line is not None:
                found["first-line"] = Timing(cold.first_line, float("nan"), cold.first_line, 0)
            found["cold-run"] = cold
            if "cached-run" not in skip:
                found["cached-run"] = timed(RUN, tree, run_home)
            timed(["server", "down"], tree, run_home)  # a lingering temporary server too
            if "cached-alone" not in skip:
                found["cached-alone"] = timed(RUN, tree, run_home, TRACERFLOW_SERVER_LINGER_S="0")
            if "cached-server" not in skip:
                up = timed(["server", "up", "--port", str(free_port())], tree, run_home)
                found["cached-server"] = timed(RUN, tree, run_home)
                if up.returncode != 0:
                    found.pop("cached-server")
        finally:
            timed(["server", "down"], tree, run_home)
    if "demo" not in skip:
        demo_home = home()
        try:
            found["demo"] = timed(["demo"], tree, demo_home)
        finally:
            timed(["server", "down"], tree, demo_home)  # its lingering temporary server
    return found


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cell(values: list[float], base: list[float] | None) -> str:
    """``median s (min-max)``, and the ratio of the first tree's median to this one's."""
    values = [value for value in values if value == value]  # no NaN (not measured)
    base = [value for value in base if value == value] if base else None
    if not values:
        return "-"
    median = statistics.median(values)
    text = f"{median:.2f} s"
    if len(values) > 1:
        text += f" ({min(values):.2f}-{max(values):.2f})"
    if base:
        text += f" x{statistics.median(base) / median:.2f}"
    return text


def table(trees: list[Path], results: list[dict[str, list[float]]]) -> str:
    names = [name for name in TARGETS if any(cell(r.get(name, []), None) != "-" for r in results)]
    header = ["measurement", *(str(tree) for tree in trees), "target"]
    rows = [
        [
            name,
            *(
                cell(result.get(name, []), results[0].get(name) if i else None)
                for i, result in enumerate(results)
            ),
            TARGETS[name],
        ]
        for name in names
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(["  ".join(c.ljust(w) for c, w in zip(header, widths, strict=True)), *lines])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tree",
        action="append",
        type=Path,
        help="a source tree to measure (repeatable; ratios are to the first); default this one",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--skip", action="append", default=[], choices=sorted(TARGETS), help="(repeatable)"
    )
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.tree or [Path(__file__).resolve().parent.parent]]
    skip = set(args.skip)
    walls: list[dict[str, list[float]]] = [{} for _ in trees]
    cpus: list[dict[str, list[float]]] = [{} for _ in trees]
    # SIGTERM as an exit, so the `finally`s run: a `server up` server is stopped, homes removed.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    scratch = Path(tempfile.mkdtemp(prefix="tracerflow-latency-"))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {load()}")
    try:
        for repeat in range(args.repeats):
            for tree, wall, cpu in zip(trees, walls, cpus, strict=True):
                started = time.perf_counter()
                for name, timing in measure_tree(tree, skip, scratch).items():
                    wall.setdefault(name, []).append(timing.seconds)
                    cpu.setdefault(name, []).append(timing.cpu)
                took = time.perf_counter() - started
                print(f"repeat {repeat + 1}/{args.repeats} {tree}: {took:.0f} s, load {load()}")
            # After each repeat, so a long measurement that is cut short still tells something.
            print()
            print(f"median of {repeat + 1} (min-max), xN = the first tree's median / this one's")
            print("wall seconds")
            print(table(trees, walls))
            print("CPU seconds (user + system)")
            print(table(trees, cpus))
            print(flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"load after: {load()}")


def load() -> str:
    """The 1, 5 and 15 minute load averages, as `uptime` shows them."""
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


if __name__ == "__main__":
    main()
