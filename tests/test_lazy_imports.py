"""What the command line imports before it does anything: `tracerflow --help` and `run --help`
answer without torch, Prefect, circuit-tracer, TransformerLens or transformers (each takes seconds
to import on a 2-core machine), and the flow module leaves torch, circuit-tracer, TransformerLens
and transformers to the stages that compute, so a fully cached run never imports them at all.
Checked in fresh interpreters (this test process has imported everything); no timing is asserted:
benchmarks/latency.py measures the seconds."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ["torch", "prefect", "circuit_tracer", "transformer_lens", "transformers"]
HELP = """
import json, sys
from tracerflow.cli import app
try:
    app({args!r})
except SystemExit as done:
    assert done.code == 0, done.code
print()
print(json.dumps(sorted(sys.modules)))
"""
IMPORT = """
import json, sys
import {module}
print(json.dumps(sorted(sys.modules)))
"""


def modules_after(code: str, home: Path) -> set[str]:
    """The top-level packages imported once ``code`` ran in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "TRACERFLOW_HOME": str(home)}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}


@pytest.mark.parametrize("args", [["--help"], ["run", "--help"]])
def test_help_imports_none_of_the_heavy_libraries(args: list[str], tmp_path: Path) -> None:
    imported = modules_after(HELP.format(args=args), tmp_path)
    assert "typer" in imported  # the check sees what was imported
    assert imported.isdisjoint(HEAVY), sorted(imported & set(HEAVY))


def test_the_flow_module_leaves_torch_and_circuit_tracer_to_the_stages(tmp_path: Path) -> None:
    imported = modules_after(IMPORT.format(module="tracerflow.flows.score"), tmp_path)
    assert "prefect" in imported  # what the flow itself needs
    assert imported.isdisjoint({"torch", "circuit_tracer", "transformer_lens", "transformers"})


def test_a_fully_cached_run_never_imports_torch(
    demo_home: Path, prefect_api: None, tmp_path: Path
) -> None:
    # The demo again, in a copy of the session's demo home: every stage is in the store, and the
    # thread count and device that key them are known without torch (tracerflow/machine.py).
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "home"
    shutil.copytree(demo_home, home, symlinks=True)
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "TRACERFLOW_HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tracerflow.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    imported = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in done.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert {"prefect", "duckdb"} <= imported  # the check sees what was imported
    assert "torch" not in imported
    finished = re.findall(
        r"Task run '([a-z-]+)-\w+' - Finished in state (\w+)", done.stdout + done.stderr
    )
    stages = {stage for stage, _ in finished}
    assert {"attribute", "score", "export", "dashboards", "evaluate"} <= stages
    assert {state for stage, state in finished if stage != "record"} == {"Cached"}
