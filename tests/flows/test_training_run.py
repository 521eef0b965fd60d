"""A training run's curve, end to end on the toy: checkpoints of one toy PLT saved at three
steps of a short fit, scored in one ``tracerflow run`` over their glob, skipping the one the
database already holds; the curve rises with the step, and ``history --by step`` and ``plot
history --by step`` show it."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from tests.reliability.harness import run_cli
from tests.storage.builders import run_info, score, transcoder
from tracerflow.cli import app
from tracerflow.storage.database import record_run
from tracerflow.storage.store import FileStore
from tracerflow.storage.training import training_curve
from tracerflow.toy import eval_corpus_path
from tracerflow.toy.train import train_checkpoints

PROMPT = "Mary and John went to the store, John gave a drink to"
STEPS = (20, 100, 400)
ALREADY_SCORED = 800  # a checkpoint the database holds before the run


@pytest.mark.slow
def test_a_training_run_s_checkpoints_are_scored_by_step_and_its_curve_rises(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    written = train_checkpoints(run, list(STEPS), log=lambda message: None)
    assert [folder.name for folder in written] == [f"step-{step:06d}" for step in STEPS]
    shutil.copytree(written[-1], run / f"step-{ALREADY_SCORED:06d}")
    home = tmp_path / "home"
    home.mkdir()
    store = FileStore(home / "scores.duckdb")
    scored = replace(
        transcoder(str(run / f"step-{ALREADY_SCORED:06d}")), training_step=ALREADY_SCORED
    )
    record_run(store, run_info("earlier"), [score(scored, PROMPT, 0.9, 0.95)])

    result = run_cli(
        [
            "--transcoder", f"{run}/step-*", "--unscored-only", "--model", "toy-gpt2",
            "--prompt", PROMPT, "--eval-corpus", str(eval_corpus_path()), "--eval-tokens", "1024",
            "--threads", "1",  # toy-sized: a second thread only contends on a shared machine
        ],
        home,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"step-{ALREADY_SCORED:06d} (step {ALREADY_SCORED}) is scored already" in (
        result.stdout + result.stderr
    )
    with duckdb.connect(str(store.path), read_only=True) as con:
        recorded = con.execute(
            "SELECT t.training_step, count(*) FROM scores s JOIN transcoders t "
            "USING (transcoder_id) WHERE s.status = 'ok' GROUP BY 1 ORDER BY 1"
        ).fetchall()
    assert recorded == [(step, 1) for step in (*STEPS, ALREADY_SCORED)]  # 800 not scored again

    curve = [row for row in training_curve(store, str(run)) if row["training_step"] in STEPS]
    assert [row["training_step"] for row in curve] == list(STEPS)
    for earlier, later in itertools.pairwise(curve):
        assert later["replacement_mean"] > earlier["replacement_mean"]
        assert later["completeness_mean"] > earlier["completeness_mean"]
        assert later["fvu"] < earlier["fvu"]
        assert later["kl"] < earlier["kl"]
    assert curve[0]["fvu"] > 0.5 > 0.1 > curve[-1]["fvu"]  # from barely trained to trained

    monkeypatch.setenv("TRACERFLOW_HOME", str(home))
    shown = CliRunner().invoke(app, ["history", "--by", "step", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    by_step = {row["training_step"]: row for row in json.loads(shown.output)}
    for row in curve:
        assert by_step[row["training_step"]]["replacement_mean"] == row["replacement_mean"]
        assert by_step[row["training_step"]]["fvu"] == row["fvu"]
    chart = tmp_path / "curve.png"
    plotted = CliRunner().invoke(app, ["plot", "history", "--by", "step", "--out", str(chart)])
    assert plotted.exit_code == 0, plotted.output
    assert chart.read_bytes().startswith(b"\x89PNG")
