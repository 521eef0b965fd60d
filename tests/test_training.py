"""A training run's checkpoints (``tracerflow.training``): which checkpoint folders a source
stands for, each one's step, and the run's door checks on them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tracerflow.errors import UsageError
from tracerflow.flows.validation import validate_run_request
from tracerflow.parameters import run_request
from tracerflow.training import (
    TrainingCheckpoint,
    checkpoint_step,
    expand_source,
    expand_sources,
    step_from_checkpoint,
    step_from_name,
)
from tracerflow.transcoders.synthetic import checkpoint_config, random_tensors, write_checkpoint

PROMPT = "Mary and John went to the store, John gave a drink to"


def toy_checkpoint(folder: Path, **config_extra: object) -> Path:
    """A PLT checkpoint shaped like the toy model's (3 layers, d_model 64), 8 features."""
    shape = {"n_layers": 3, "d_model": 64, "d_features": 8}
    config = checkpoint_config(kind="plt", nonlinearity="ReLU", **shape)
    tensors = random_tensors(kind="plt", nonlinearity="ReLU", **shape)
    return write_checkpoint(folder, {**config, **config_extra}, tensors)


@pytest.mark.parametrize(
    ("name", "step"),
    [
        ("epoch=0-step=500", 500),  # Lightning's ModelCheckpoint default
        ("step-000300", 300),
        ("step_42", 42),
        ("global_step1200", 1200),
        ("checkpoint-2500", 2500),  # transformers' Trainer
        ("ckpt_7", 7),
        ("900", 900),
        ("clt-topk-16k", None),
        ("stepwise", None),
        ("v2", None),
    ],
)
def test_a_checkpoint_folder_s_name_gives_its_step(name: str, step: int | None) -> None:
    assert step_from_name(name) == step


def test_a_lightning_checkpoint_gives_the_global_step_it_saved(tmp_path: Path) -> None:
    folder = tmp_path / "last"
    folder.mkdir()
    # What Lightning's dump_checkpoint writes first; the loops hold steps of their own later.
    payload = {
        "epoch": 3,
        "global_step": 70_000,
        "pytorch-lightning_version": "2.5.0",
        "state_dict": {"model.encoder.W": torch.zeros(1, 2, 3)},
        "loops": {"fit_loop": {"global_step": 1}},
    }
    torch.save(payload, folder / "clt.ckpt")

    assert step_from_checkpoint(folder) == 70_000
    assert torch.load(folder / "clt.ckpt", weights_only=True)["global_step"] == 70_000


def test_a_config_s_global_step_counts_when_the_name_has_none(tmp_path: Path) -> None:
    named = toy_checkpoint(tmp_path / "step-20", global_step=999)
    unnamed = toy_checkpoint(tmp_path / "latest", global_step=40)
    neither = toy_checkpoint(tmp_path / "final")

    assert checkpoint_step(named) == 20  # the name first
    assert checkpoint_step(unnamed) == 40
    assert checkpoint_step(neither) is None


def test_a_folder_of_checkpoints_and_a_glob_stand_for_each_checkpoint_by_step(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    for step in (1000, 50, 300):
        toy_checkpoint(run / f"step-{step}")
    (run / "logs").mkdir()  # not a checkpoint: left out
    expected = [TrainingCheckpoint(str(run / f"step-{step}"), step) for step in (50, 300, 1000)]

    assert expand_source(str(run)) == expected
    assert expand_source(str(run / "step-*")) == expected
    assert expand_source(str(run / "step-300")) == [TrainingCheckpoint(str(run / "step-300"), 300)]
    assert expand_source("toy-plt") == [TrainingCheckpoint("toy-plt", None)]
    # the same checkpoint named twice is scored once
    assert expand_sources([str(run), str(run / "step-1*")]) == expected


def test_a_glob_matching_no_checkpoint_and_a_checkpoint_without_a_step_are_refused(
    tmp_path: Path,
) -> None:
    with pytest.raises(UsageError, match=r"matches no checkpoint folder$"):
        expand_source(str(tmp_path / "step-*"))
    (tmp_path / "step-1").mkdir()
    with pytest.raises(UsageError, match=r"matches no checkpoint folder \(1 paths that are not\)"):
        expand_source(str(tmp_path / "step-*"))
    toy_checkpoint(tmp_path / "run" / "step-10")
    toy_checkpoint(tmp_path / "run" / "final")
    with pytest.raises(UsageError, match=r"run/final of transcoder .* has no training step"):
        expand_source(str(tmp_path / "run"))


def test_the_door_checks_every_checkpoint_of_a_run_folder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    toy_checkpoint(run / "step-10")
    toy_checkpoint(run / "step-20")
    request = run_request(transcoders=[str(run)], prompts=[PROMPT], model="toy-gpt2")
    validate_run_request(request)  # both fit the toy model

    (run / "step-30").mkdir()
    (run / "step-30" / "config.yaml").write_text("model: [")
    (run / "step-30" / "checkpoint.safetensors").write_bytes(b"")
    with pytest.raises(UsageError, match="step-30"):
        validate_run_request(request)


def test_a_suite_watching_a_run_s_folder_asks_for_unscored_checkpoints_only(
    tmp_path: Path,
) -> None:
    from tracerflow.flows.validation import suite_request
    from tracerflow.suites import load_suite

    toy_checkpoint(tmp_path / "run" / "step-10")
    suite_file = tmp_path / "watch.yaml"
    suite_file.write_text(
        "name: watch-run\n"
        f"transcoders: ['{tmp_path}/run/step-*']\n"
        "model: toy-gpt2\n"
        f"prompts: ['{PROMPT}']\n"
        "parameters: {unscored_only: true}\n"
    )

    request = suite_request(load_suite(str(suite_file)))

    assert request.unscored_only is True
    assert request.transcoders == [f"{tmp_path}/run/step-*"]  # expanded at each run, not now
    validate_run_request(request)
    assert run_request(transcoders=["toy-plt"], prompts=[PROMPT]).unscored_only is False
