"""Importing tracerflow's packages changes nothing in the process: Prefect's defaults are set by
the entry points (``tracerflow.settings.configure_prefect_defaults`` lists them), never by an
import. Checked in a fresh interpreter whose environment holds none of those defaults (this test
process has them: tests/conftest.py is an entry point)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CHECK = """
import json, os, sys
before = dict(os.environ)
import {module}
after = dict(os.environ)
print(json.dumps({{
    "added": sorted(set(after) - set(before)),
    "changed": sorted(k for k in before if k in after and before[k] != after[k]),
    "removed": sorted(set(before) - set(after)),
    "prefect imported": "prefect" in sys.modules,
}}))
"""


def bare_environment(home: Path) -> dict[str, str]:
    """This process's environment without Prefect's settings and tracerflow's defaults."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("PREFECT_") and name != "DO_NOT_TRACK"
    }
    return {**env, "TRACERFLOW_HOME": str(home), "PYTHONPATH": str(REPO)}


def changes_on_import(module: str, home: Path) -> dict:
    """What importing ``module`` (the text after ``import``) in a bare interpreter changed."""
    done = subprocess.run(
        [sys.executable, "-c", CHECK.format(module=module)],
        env=bare_environment(home),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("module", ["tracerflow.tasks", "tracerflow.flows", "tracerflow.cli"])
def test_importing_a_package_leaves_the_environment_unchanged(module: str, tmp_path: Path) -> None:
    changes = changes_on_import(module, tmp_path / "home")
    # Nor does it import Prefect: the CLI sets the defaults when a command starts, which is only
    # in time if importing the CLI has not read Prefect's settings already.
    expected = {"added": [], "changed": [], "removed": [], "prefect imported": False}
    assert changes == expected, f"import {module}: {changes}"
    assert not (tmp_path / "home").exists()  # nor a Prefect home created under it


def test_the_check_sees_a_change(tmp_path: Path) -> None:
    """The same check, on the one call that sets the defaults, finds them."""
    configure = "tracerflow.settings; tracerflow.settings.configure_prefect_defaults()"
    assert "PREFECT_HOME" in changes_on_import(configure, tmp_path / "home")["added"]


def test_a_command_sets_the_defaults_before_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI is an entry point: any command (here ``presets``) finds the defaults set."""
    from typer.testing import CliRunner

    from tracerflow.cli import app

    for name in [name for name in os.environ if name.startswith("PREFECT_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("TRACERFLOW_HOME", str(tmp_path / "home"))

    result = CliRunner().invoke(app, ["presets"])

    assert result.exit_code == 0, result.output
    assert os.environ["PREFECT_HOME"] == str(tmp_path / "home" / "prefect")
    assert os.environ["PREFECT_LOGGING_EXTRA_LOGGERS"] == "tracerflow"
