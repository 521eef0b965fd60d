"""Three flow runs started at once, in separate processes, on one home: every row lands."""

from __future__ import annotations

import os
import subprocess
import sys

import duckdb
import pytest

PROMPTS = [
    "Mary and John went to the store, John gave a drink to",
    "When Alice and Bob went to the park, Bob gave a ball to",
    "Kate and Mark went to the office, Mark gave a key to",
]


@pytest.mark.slow
def test_three_concurrent_flow_runs_all_land_their_rows(tmp_path, prefect_api):
    """They share the session's Prefect server and one home: their database writes queue on
    the file's writer lock."""
    from prefect.settings import PREFECT_API_URL

    home = tmp_path / "home"
    env = {**os.environ, "TRACERFLOW_HOME": str(home), "PREFECT_API_URL": PREFECT_API_URL.value()}
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tracerflow.cli",
                "run",
                "--transcoder",
                "toy-clt",
                "--prompt",
                prompt,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for prompt in PROMPTS
    ]
    outputs = [process.communicate(timeout=900)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        runs = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        rows = con.execute("SELECT prompt, status FROM scores_wide ORDER BY prompt").fetchall()
    assert runs == 3
    assert rows == [(prompt, "ok") for prompt in sorted(PROMPTS)]
