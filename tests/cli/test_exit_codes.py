"""The one error path: a ``TracerflowError`` from any command is one ``error: ...`` line on
stderr, no traceback, and exit status 2 for bad input or 1 for a run that failed."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.reliability.harness import run_cli
from tracerflow.cli import app
from tracerflow.errors import (
    AttributionError,
    CheckpointError,
    ConfigError,
    RunNotRecordedError,
    SourceError,
    StorageError,
    TracerflowError,
    UsageError,
)


def assert_one_error_line(stderr: str, fragment: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert fragment in lines[0], stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["run", "--prompt", "x"], "give at least one --transcoder"),  # UsageError
        (["run", "--suite", "no-such-suite"], "suite 'no-such-suite' is not a file"),  # Config
        (["inspect", "{tmp}/missing"], "checkpoint folder does not exist"),  # CheckpointError
        (["history", "--db", "{tmp}/none.duckdb"], "no score database at"),  # StorageError
        (["sql", "SELECT 1", "--out", "{tmp}", "--db", "{tmp}/none.duckdb"], "is a folder"),
    ],
    ids=["usage", "config", "checkpoint", "missing-database", "out-folder"],
)
def test_bad_input_exits_2_in_one_line(arguments: list[str], fragment: str, tmp_path: Path):
    result = CliRunner().invoke(app, [argument.format(tmp=tmp_path) for argument in arguments])

    assert result.exit_code == 2, result.output
    assert_one_error_line(result.stderr, fragment)


def test_a_failed_run_exits_1_in_one_line(prefect_api: None, tmp_path: Path) -> None:
    # Offline, a Hub source that is not cached fails the run's one item; the run itself started
    # (on the toy model, which the door lets in).
    arguments = ["--transcoder", "nobody/no-such-clt", "--model", "toy-gpt2", "--prompt", "a b c"]
    result = run_cli(arguments, tmp_path)

    assert result.returncode == 1, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "1 of 1 items failed" in errors[0], result.stderr
    # The terminal has no traceback and says the failure twice at most (tracerflow's own log line
    # when it happened, the error line at the end); the full log, which the error line names
    # last, keeps everything.
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stderr.count("is not in the Hugging Face cache") <= 2, result.stderr
    assert errors[0].endswith(".log)") and " (full log: " in errors[0], errors[0]
    full_log = Path(errors[0].rsplit(" (full log: ", 1)[1].removesuffix(")"))
    assert full_log.is_relative_to(tmp_path) and "Traceback" in full_log.read_text()


def test_the_viewer_alone_reports_errors_the_same_way(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "tracerflow.viewer", "view", "--port", str(port)],
            env={"PATH": "", "TRACERFLOW_HOME": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert result.returncode == 1  # the input is valid; the port is busy
    assert_one_error_line(result.stderr, f"cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize(
    ("error", "exit_code"),
    [
        (UsageError("x"), 2),
        (ConfigError("x"), 2),
        (CheckpointError("x"), 2),
        (SourceError("x"), 2),
        (StorageError("x"), 2),
        (SourceError("x", retryable=True), 1),
        (RunNotRecordedError("x"), 1),
        (AttributionError("x"), 1),
        (TracerflowError("x"), 1),
    ],
    ids=lambda value: repr(value) if isinstance(value, TracerflowError) else str(value),
)
def test_each_error_has_the_documented_exit_code(error: TracerflowError, exit_code: int) -> None:
    assert error.exit_code == exit_code
