"""`tracerflow run` and `tracerflow demo` as a user runs them."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tracerflow.cli import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("arguments", "message", "exit_code"),
    [
        (["run", "--prompt", "x"], "give at least one --transcoder or a --preset", 2),
        (["run", "--transcoder", "toy-clt"], "give at least one --prompt or a --prompts-file", 2),
        (
            ["run", "--transcoder", "toy-clt", "--prompts-file", "/nonexistent.txt"],
            "/nonexistent.txt: prompts file does not exist",
            2,
        ),
        (["run", "--suite", "no-such-suite"], "suite 'no-such-suite' is not a file", 2),
    ],
)
def test_bad_run_arguments_fail_in_one_line(arguments, message, exit_code):
    result = runner.invoke(app, arguments)
    assert result.exit_code == exit_code
    assert message in result.output
    assert "Traceback" not in result.output


def test_demo_prints_the_scores_table_and_where_things_are(demo_run):
    lines = demo_run.stdout.splitlines()
    table = [line for line in lines if line.startswith(("toy-clt ", "toy-plt "))]
    assert len(table) == 12 and all(line.rstrip().endswith("ok") for line in table)
    assert f"scores database   {demo_run.home / 'scores.duckdb'}" in lines
    assert "view the graphs   tracerflow view" in lines
    assert (demo_run.home / "scores.duckdb").is_file()
