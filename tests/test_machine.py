"""What torch makes of this machine, known without importing torch (tracerflow/machine.py):
each answer checked against torch's own, asked in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tracerflow import machine

REPO = Path(__file__).resolve().parent.parent
# Prints tracerflow's default thread count, whether torch was imported for it, and torch's own
# count after that (the process has changed nothing: torch's default; None when not asked for).
ASK = """
import json, sys
from pathlib import Path
from tracerflow.machine import default_threads
ours = default_threads(Path(sys.argv[1]))
imported = "torch" in sys.modules
torchs = None
if sys.argv[2] == "compare":
    import torch
    torchs = torch.get_num_threads()
print(json.dumps([ours, imported, torchs]))
"""


def ask(
    home: Path, variables: dict[str, str], one_cpu: bool, compare: bool
) -> tuple[int, bool, int | None]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_"))},
        "PYTHONPATH": str(REPO),
        **variables,
    }
    done = subprocess.run(
        [sys.executable, "-c", ASK, str(home), "compare" if compare else "-"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=(lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
        if one_cpu
        else None,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ours, imported, torchs = json.loads(done.stdout.splitlines()[-1])
    return ours, imported, torchs


def test_the_torch_version_is_torchs() -> None:
    assert machine.torch_version() == torch.__version__


def test_the_default_device_is_cuda_where_torch_sees_a_cuda_device() -> None:
    expected = "cuda" if torch.cuda.is_available() and torch.cuda.device_count() > 0 else "cpu"
    assert machine.default_device() == expected


@pytest.mark.skipif(sys.platform != "linux", reason="sched_setaffinity is Linux's")
def test_the_default_thread_count_is_torchs_and_is_asked_once_per_environment(
    tmp_path: Path,
) -> None:
    environments = [({}, False), ({"OMP_NUM_THREADS": "1"}, False), ({}, True)]  # True: one CPU
    first = [ask(tmp_path, env, one_cpu, compare=True) for env, one_cpu in environments]
    # torch was asked each time (each environment has its own fingerprint), and we said what it
    # says in a process that changed nothing
    assert [imported for _, imported, _ in first] == [True] * len(environments)
    assert [ours for ours, _, _ in first] == [torchs for _, _, torchs in first]
    assert first[1][0] == 1 and first[2][0] == 1
    assert len(list((tmp_path / machine.MEMO_FOLDER).iterdir())) == len(environments)

    again = [ask(tmp_path, env, one_cpu, compare=False) for env, one_cpu in environments]
    assert [imported for _, imported, _ in again] == [False] * len(environments)
    assert [ours for ours, _, _ in again] == [ours for ours, _, _ in first]


def test_a_memo_that_is_not_this_environments_is_not_believed(tmp_path: Path) -> None:
    fingerprint = machine.thread_fingerprint()
    memo = tmp_path / "memo.json"
    memo.write_text(json.dumps({"fingerprint": fingerprint, "threads": 7}))
    assert machine.read_memo(memo, fingerprint) == 7
    other = {**fingerprint, "environment": {"OMP_NUM_THREADS": "7"}}
    assert machine.read_memo(memo, other) is None
    for damaged in ['{"fingerprint": 1', "[]", json.dumps({"fingerprint": fingerprint})]:
        memo.write_text(damaged)
        assert machine.read_memo(memo, fingerprint) is None
    memo.write_text(json.dumps({"fingerprint": fingerprint, "threads": 0}))
    assert machine.read_memo(memo, fingerprint) is None


def test_a_process_that_imported_torch_first_remembers_nothing(tmp_path: Path) -> None:
    # This test process imported torch long ago and may have changed its thread count.
    assert machine.default_threads(tmp_path) == torch.get_num_threads()
    assert not (tmp_path / machine.MEMO_FOLDER).exists()
