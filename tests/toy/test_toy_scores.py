"""The toy transcoders make attribution scores mean something: trained beats random."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from circuit_tracer import attribute
from circuit_tracer.graph import compute_graph_scores

from tests.presets import preset_named
from tracerflow import toy
from tracerflow.models import ReplacementModel, load_replacement_model
from tracerflow.presets import builtin_prompts
from tracerflow.transcoders import convert, load_converted, read_checkpoint
from tracerflow.transcoders.synthetic import random_checkpoint


def _scores(model: ReplacementModel, prompts: list[str]) -> list[tuple[float, float]]:
    """(replacement, completeness) of each prompt through circuit-tracer, toy-clt parameters."""
    params = preset_named("toy-clt").attribution_params().model_dump()
    scores = []
    for prompt in prompts:
        graph = attribute(prompt, model, verbose=False, **params)
        scores.append(compute_graph_scores(graph))
    return scores


@pytest.fixture(scope="module")
def random_clt_model(tmp_path_factory: pytest.TempPathFactory) -> ReplacementModel:
    """The toy model with a random CLT of the trained CLT's shape and sparsity (same k)."""
    trained = read_checkpoint(toy.transcoder_dir("clt"))
    root = tmp_path_factory.mktemp("random-clt")
    checkpoint = random_checkpoint(
        root / "checkpoint",
        kind="clt",
        n_layers=trained.n_layers,
        d_model=trained.d_model,
        d_features=trained.d_features,
        k=trained.activation.k or 0,
        seed=1,
    )
    converted = convert(checkpoint, root / "converted")
    return load_replacement_model("toy-gpt2", load_converted(converted, "cpu"), "cpu")


def test_trained_clt_scores_clearly_higher_than_a_random_clt_on_every_builtin_prompt(
    toy_clt_model: ReplacementModel,
    random_clt_model: ReplacementModel,
) -> None:
    prompts = builtin_prompts()
    trained = _scores(toy_clt_model, prompts)
    random = _scores(random_clt_model, prompts)
    for prompt, (t_rep, t_comp), (r_rep, r_comp) in zip(prompts, trained, random, strict=True):
        print(f"{prompt!r}: trained ({t_rep:.3f}, {t_comp:.3f}) random ({r_rep:.3f}, {r_comp:.3f})")
        assert t_rep > r_rep + 0.1
        assert t_comp > r_comp + 0.1
    mean_trained = [sum(column) / len(prompts) for column in zip(*trained, strict=True)]
    mean_random = [sum(column) / len(prompts) for column in zip(*random, strict=True)]
    print(f"mean: trained {mean_trained} random {mean_random}")


@pytest.mark.parametrize("name", ["toy-clt", "toy-plt", "toy-jumprelu-clt"])
def test_every_toy_preset_attributes_every_builtin_prompt_with_active_features(
    name: str, converted_dirs: dict[str, Path]
) -> None:
    preset = preset_named(name)
    folder = preset.transcoder_path().name
    model = load_replacement_model(preset.model, load_converted(converted_dirs[folder], "cpu"))
    for prompt in builtin_prompts():
        graph = attribute(prompt, model, verbose=False, **preset.attribution_params().model_dump())
        assert len(graph.selected_features) > 0
        replacement, completeness = compute_graph_scores(graph)
        assert 0.5 < replacement <= 1.0 and 0.5 < completeness <= 1.0, (prompt, name)


def test_transcoders_reconstruct_the_models_mlp_outputs_as_training_recorded(
    toy_clt_model: ReplacementModel,
) -> None:
    """The shipped CLT, read through the converter, still has the FVU training measured."""
    tokens = toy_clt_model.ensure_tokenized(builtin_prompts()[0])
    names = ("hook_resid_mid", "hook_mlp_out")
    with torch.no_grad():
        _, cache = toy_clt_model.run_with_cache(
            tokens, names_filter=lambda name: name.endswith(names)
        )
        n_layers = toy_clt_model.cfg.n_layers
        inputs = torch.stack([cache[f"blocks.{i}.hook_resid_mid"][0] for i in range(n_layers)])
        outputs = torch.stack([cache[f"blocks.{i}.hook_mlp_out"][0] for i in range(n_layers)])
        reconstruction = toy_clt_model.transcoders(inputs)
    fvu = ((outputs - reconstruction)[:, 1:].pow(2).sum((1, 2))) / (
        (outputs[:, 1:] - outputs[:, 1:].mean(1, keepdim=True)).pow(2).sum((1, 2))
    )
    recorded = toy.training_record()["transcoders"]["clt"]["held_out_fvu_per_layer"]
    assert fvu.max().item() < 0.15, (fvu.tolist(), recorded)
