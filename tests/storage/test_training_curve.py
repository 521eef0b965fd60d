"""A training run's checkpoints in the score database: ``transcoders.training_step``, which
checkpoints are scored (what a watching deployment skips) and the curve by step, on the
embedded file and on a lake alike."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from statistics import fmean

import pytest

from tests.postgres import PostgresServer
from tests.storage.builders import FIRST_NIGHT, IOI_PROMPTS, run_info, score, transcoder
from tests.storage.test_lake import new_lake, rounded
from tracerflow.errors import StorageError
from tracerflow.storage.database import record_run
from tracerflow.storage.records import TranscoderInfo
from tracerflow.storage.report import write_training_curve
from tracerflow.storage.store import FileStore
from tracerflow.storage.training import scored_checkpoints, training_curve

RUN = "/runs/clt-a"
# (step, replacement and completeness on each of the first two IOI prompts)
CHECKPOINTS = {
    100: ((0.20, 0.60), (0.30, 0.70)),
    500: ((0.50, 0.80), (0.60, 0.84)),
    2000: ((0.70, 0.90), (0.72, 0.93)),
}
PROMPTS = IOI_PROMPTS[:2]


def checkpoint(step: int, run: str = RUN) -> TranscoderInfo:
    return replace(transcoder(f"{run}/step-{step}"), training_step=step)


def record_first_run(store: object) -> None:
    """Each checkpoint scored on both prompts in one run."""
    records = [
        score(checkpoint(step), prompt, *values)
        for step, per_prompt in CHECKPOINTS.items()
        for prompt, values in zip(PROMPTS, per_prompt, strict=True)
    ]
    record_run(store, run_info("first"), records)  # type: ignore[arg-type]


def record_training_run(store: object) -> None:
    """The first run; then step 2000 scored again in a later run, its newest scores higher; a
    step of another run, and a checkpoint with a failed item."""
    record_first_run(store)
    later = FIRST_NIGHT + timedelta(days=1)
    again = [score(checkpoint(2000), prompt, 0.74, 0.94, created_at=later) for prompt in PROMPTS]
    other = [score(checkpoint(100, "/runs/plt-b"), prompt, 0.1, 0.5) for prompt in PROMPTS]
    failing = [
        score(checkpoint(3000), PROMPTS[0], 0.8, 0.95, created_at=later),
        score(checkpoint(3000), PROMPTS[1], None, None, created_at=later, status="failed"),
    ]
    record_run(store, run_info("second", later), again + other + failing)  # type: ignore[arg-type]


def test_the_curve_is_each_checkpoint_s_newest_mean_by_run_and_step(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "scores.duckdb")
    record_training_run(store)

    curve = training_curve(store, transcoder=RUN)

    assert [row["training_step"] for row in curve] == [100, 500, 2000, 3000]
    assert {row["training_run"] for row in curve} == {RUN}
    means = {row["training_step"]: row["replacement_mean"] for row in curve}
    # each checkpoint's mean over its prompts, computed here from the values recorded
    for step, per_prompt in CHECKPOINTS.items():
        if step != 2000:
            assert means[step] == pytest.approx(fmean(r for r, _ in per_prompt), abs=1e-12)
    assert means[2000] == pytest.approx(0.74, abs=1e-12)  # its newest run's, not both
    assert means[3000] == pytest.approx(0.8, abs=1e-12)  # the failed item is no score
    assert [row["n_prompts"] for row in curve] == [2, 2, 2, 1]
    assert all(row["fvu"] is None for row in curve)  # no metrics were recorded
    # a checkpoint named by its own path, and every run when none is named
    assert [row["training_step"] for row in training_curve(store, f"{RUN}/step-500/")] == [500]
    assert {row["training_run"] for row in training_curve(store)} == {RUN, "/runs/plt-b"}


def test_a_checkpoint_is_scored_once_every_prompt_has_a_successful_score(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "scores.duckdb")
    assert scored_checkpoints(store, [(f"{RUN}/step-100", 100)], PROMPTS) == set()  # no file

    record_training_run(store)
    asked = [(f"{RUN}/step-{step}", step) for step in (100, 500, 2000, 3000, 4000)]

    assert scored_checkpoints(store, asked, PROMPTS) == {
        (f"{RUN}/step-100", 100),
        (f"{RUN}/step-500", 500),
        (f"{RUN}/step-2000", 2000),
    }  # 3000 failed on one prompt, 4000 was never scored
    assert scored_checkpoints(store, asked, [*PROMPTS, "a prompt not scored yet"]) == set()
    # the same folder at another step is another checkpoint
    assert scored_checkpoints(store, [(f"{RUN}/step-100", 101)], PROMPTS) == set()


def test_the_training_curve_chart_is_written_and_refused_when_empty(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "scores.duckdb")
    record_run(store, run_info("no-steps"), [score(transcoder(), PROMPTS[0], 0.5, 0.8)])
    with pytest.raises(StorageError, match="no checkpoint with a training step is scored"):
        write_training_curve(store, tmp_path / "curve.png")

    record_training_run(store)
    written = write_training_curve(store, tmp_path / "curve.png")
    assert written.read_bytes().startswith(b"\x89PNG")
    assert "step-2000" in write_training_curve(store, tmp_path / "curve.html").read_text()


def test_a_lake_records_and_answers_the_training_curve_as_the_file_does(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    file_store = FileStore(tmp_path / "scores.duckdb")
    lake_store = new_lake(postgres, tmp_path, "training")
    for store in (file_store, lake_store):
        record_first_run(store)
    asked = [(f"{RUN}/step-{step}", step) for step in CHECKPOINTS]

    # a lake sums rows in another order: means and deviations may differ in their last bit
    assert rounded(training_curve(lake_store)) == rounded(training_curve(file_store))
    assert scored_checkpoints(lake_store, asked, PROMPTS) == set(asked)
