"""What the command line imports before it does anything: `tracerflow --help` and `run --help`
answer without torch, Prefect, circuit-tracer, TransformerLens or transformers (each takes seconds
to import on a 2-core machine), and the flow module leaves circuit-tracer, TransformerLens and
transformers to the stages that use them, so a fully cached run never imports them at its start.
Checked in fresh interpreters (this test process has imported everything); no timing is asserted:
benchmarks/latency.py measures the seconds."""

from __future__ import annotations

import json
import os
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


def test_the_flow_module_leaves_circuit_tracer_to_the_stages(tmp_path: Path) -> None:
    imported = modules_after(IMPORT.format(module="tracerflow.flows.score"), tmp_path)
    assert {"torch", "prefect"} <= imported  # what the flow itself needs
    assert imported.isdisjoint({"circuit_tracer", "transformer_lens", "transformers"})
