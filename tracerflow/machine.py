"""What torch makes of this machine, known without importing torch wherever that is safe.

A stored attribution is keyed by the torch version, the device and the intra-op thread count (a
float sum split over another number of threads rounds differently). A fully cached re-run needs
all three to find its results, and importing torch only to ask costs about 1.2 s of a 5 s re-run
on a 2-core machine. So:

- the torch version is read from its installed metadata, the string ``torch.__version__`` is;
- CUDA is absent when no NVIDIA driver is loaded; with one, torch decides (a CPU build says no);
- torch's default thread count follows MKL's and OpenMP's rules (the physical cores of the CPUs
  the process may run on, ``OMP_NUM_THREADS`` and ``MKL_NUM_THREADS`` capped at those cores unless
  ``MKL_DYNAMIC=false``, ...), too many to reproduce faithfully. torch is asked once, and its
  answer kept in the home under a fingerprint of every input those rules read: torch's build,
  the CPU topology, the CPUs this process may use, the cgroup's CPU quota and the thread
  libraries' environment variables. Any change there asks torch again.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from collections.abc import Iterator
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from tracerflow.fsutil import write_text_atomically
from tracerflow.hashing import sha256_json

# Environment variables the thread libraries behind torch read (Intel and GNU OpenMP, MKL,
# OpenBLAS) or torch itself: any of them may change the default thread count.
THREAD_VARIABLE_PREFIXES = ("OMP_", "KMP_", "GOMP_", "MKL_", "OPENBLAS_", "TORCH_", "ATEN_")
MEMO_FOLDER = "machine"


@cache
def torch_version() -> str:
    """``torch.__version__``, e.g. ``2.13.0+cpu``, from the installed package's metadata."""
    try:
        return version("torch")
    except PackageNotFoundError:  # a torch not installed as a distribution: ask it
        import torch

        return str(torch.__version__)


def cuda_device_count() -> int:
    """CUDA devices torch can use. Without an NVIDIA driver the answer is 0 without importing
    torch (seconds on a loaded machine); with one, torch decides (a CPU build says 0)."""
    driver = Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidiactl").exists()
    if not driver:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_device() -> str:
    """``cuda`` when torch can use a CUDA device, else ``cpu``."""
    return "cuda" if cuda_device_count() > 0 else "cpu"


def default_threads(home: Path) -> int:
    """torch's intra-op thread count in a process that has not changed it: its default on this
    machine, in this environment. Read from the memo ``home/machine/`` keeps for this
    environment's fingerprint; else asked of torch, and remembered when torch was imported here
    for the asking (a process that imported torch before may have changed its count)."""
    fingerprint = thread_fingerprint()
    memo = home / MEMO_FOLDER / f"torch-threads-{sha256_json(fingerprint)[:16]}.json"
    remembered = read_memo(memo, fingerprint)
    if remembered is not None:
        return remembered
    untouched = "torch" not in sys.modules
    import torch

    threads = int(torch.get_num_threads())
    if untouched:
        with contextlib.suppress(OSError):  # a home we cannot write to only costs the next run
            memo.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"fingerprint": fingerprint, "threads": threads}, indent=1)
            write_text_atomically(memo, text + "\n")
    return threads


def read_memo(memo: Path, fingerprint: dict[str, Any]) -> int | None:
    """The thread count ``memo`` holds for ``fingerprint``; None when absent or not that."""
    try:
        kept = json.loads(memo.read_text())
        threads = kept["threads"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if kept.get("fingerprint") != fingerprint or not isinstance(threads, int) or threads < 1:
        return None
    return threads


def thread_fingerprint() -> dict[str, Any]:
    """Every input of torch's default thread count that can be read without torch."""
    spec = find_spec("torch")
    return {
        "torch": torch_version(),
        "torch_location": spec.origin if spec is not None else None,
        "platform": [sys.platform, platform.machine()],
        "cpu_count": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)) if sys.platform == "linux" else None,
        "cores": cpu_topology(),
        "cgroup_cpu_max": read_text(Path("/sys/fs/cgroup/cpu.max")),
        "environment": {
            name: value
            for name, value in sorted(os.environ.items())
            if name.startswith(THREAD_VARIABLE_PREFIXES)
        },
    }


def cpu_topology() -> list[list[str | None]]:
    """Each online CPU's (number, package, core): which logical CPUs share a physical core."""
    root = Path("/sys/devices/system/cpu")
    cpus = sorted(root.glob("cpu[0-9]*"), key=lambda path: int(path.name[3:]))
    return [
        [
            cpu.name,
            read_text(cpu / "topology" / "physical_package_id"),
            read_text(cpu / "topology" / "core_id"),
        ]
        for cpu in cpus
    ]


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block at ``threads`` intra-op threads (None: as the process is set), then put the
    process's setting back. The count is a setting, never chosen by timing: float sums split
    over another number of threads round differently, and when ``max_feature_nodes`` binds a
    near-tie in the ranking could then select another feature."""
    import torch

    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
