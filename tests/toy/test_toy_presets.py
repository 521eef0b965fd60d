"""Presets are data: the toy, the notebook's and circuit-tracer's published sets, with the
notebook's attribution defaults and each Hub transcoder's download size."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tracerflow
from tests.presets import preset_named
from tracerflow.cli import app
from tracerflow.errors import ConfigError
from tracerflow.flows.validation import check_preset
from tracerflow.presets import (
    BUILTIN_PROMPTS,
    builtin_prompts,
    list_presets,
    resolve_package_path,
)
from tracerflow.toy.grammar import NOTEBOOK_PROMPT, builtin_sentences

EXPECTED = {
    "toy-clt": ("toy-gpt2", "clt"),
    "toy-plt": ("toy-gpt2", "plt"),
    "toy-jumprelu-clt": ("toy-gpt2", "clt"),
    "gpt2-clt-16k": ("gpt2", "clt"),
    "gpt2-plt-16k": ("gpt2", "plt"),
    "gemma-2-2b-gemmascope": ("google/gemma-2-2b", "plt"),
    "gemma-2-2b-clt-426k": ("google/gemma-2-2b", "clt"),
    "llama-3.2-1b-plt": ("meta-llama/Llama-3.2-1B", "plt"),
    "llama-3.2-1b-clt-524k": ("meta-llama/Llama-3.2-1B", "clt"),
    "qwen3-0.6b-plt": ("Qwen/Qwen3-0.6B", "plt"),
    "qwen3-1.7b-plt": ("Qwen/Qwen3-1.7B", "plt"),
    "qwen3-4b-plt": ("Qwen/Qwen3-4B", "plt"),
    "qwen3-8b-plt": ("Qwen/Qwen3-8B", "plt"),
    "qwen3-14b-plt": ("Qwen/Qwen3-14B", "plt"),
}


def test_the_registry_lists_the_toy_and_the_real_presets() -> None:
    presets = {preset.name: (preset.model, preset.kind) for preset in list_presets()}
    assert presets == EXPECTED


def test_real_presets_name_the_notebooks_hub_transcoders() -> None:
    clt, plt = preset_named("gpt2-clt-16k"), preset_named("gpt2-plt-16k")
    assert clt.transcoder == "georglange/crosslayer-transcoder-topk-16k"
    assert plt.transcoder == "georglange/crosslayer-transcoder-topk-plt-16k"
    assert not preset_named("gpt2-clt-16k").is_builtin


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_preset_carries_the_notebooks_attribution_defaults(name: str) -> None:
    preset = preset_named(name)
    assert (preset.max_n_logits, preset.desired_logit_prob, preset.max_feature_nodes) == (
        10,
        0.95,
        8192,
    )
    assert (preset.node_threshold, preset.edge_threshold) == (0.8, 0.98)
    assert preset.attribution_params().batch_size == preset.batch_size


def test_toy_presets_use_a_cpu_sized_batch() -> None:
    assert all(preset_named(name).batch_size <= 64 for name in EXPECTED if name.startswith("toy"))


def test_a_typo_raises_config_error_naming_the_known_presets() -> None:
    with pytest.raises(ConfigError) as error:
        check_preset("toy-cl")
    assert "toy-cl" in str(error.value)
    for name in EXPECTED:
        assert name in str(error.value)


def test_builtin_transcoders_resolve_to_package_data_not_to_a_checkout_path() -> None:
    package_dir = Path(tracerflow.__file__).parent
    for name in ("toy-clt", "toy-plt", "toy-jumprelu-clt"):
        preset = preset_named(name)
        assert preset.transcoder.startswith("package:")
        assert not Path(preset.transcoder.removeprefix("package:")).is_absolute()
        path = preset.transcoder_path()
        assert path.is_relative_to(package_dir)
        assert (path / "config.yaml").is_file()


def test_a_hub_preset_has_no_local_transcoder_path() -> None:
    with pytest.raises(ConfigError, match="Hub repo"):
        preset_named("gpt2-clt-16k").transcoder_path()


def test_a_bad_package_reference_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        resolve_package_path("package:tracerflow.toy/data/no-such-folder")


def test_builtin_prompts_start_with_the_notebook_prompt() -> None:
    prompts = builtin_prompts()
    assert prompts[0] == NOTEBOOK_PROMPT == "Mary and John went to the store, John gave a drink to"
    assert 5 <= len(prompts) <= 8
    assert tuple(prompts) == BUILTIN_PROMPTS


def test_builtin_prompts_are_sentences_of_the_grammar_with_the_unrepeated_name_as_answer() -> None:
    for sentence in builtin_sentences():
        assert sentence.prompt.count(sentence.subject) == 2
        assert sentence.prompt.count(sentence.io) == 1
    assert builtin_sentences()[0].answer == " Mary"


def test_presets_command_prints_a_table_of_every_preset() -> None:
    result = CliRunner().invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["name", "model", "transcoder", "kind"]
    for name, (model, kind) in EXPECTED.items():
        row = next(line for line in lines if line.startswith(name + " "))
        assert model in row and f" {kind} " in row


def test_presets_command_prints_json_for_scripts() -> None:
    result = CliRunner().invoke(app, ["presets", "--format", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [row["name"] for row in rows] == list(EXPECTED)
    assert rows[0]["max_feature_nodes"] == 8192 and rows[0]["kind"] == "clt"


def test_presets_command_shows_each_hub_presets_download_size() -> None:
    result = CliRunner().invoke(app, ["presets"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:5] == ["name", "model", "transcoder", "kind", "download"]
    cells = {line.split()[0]: line for line in lines[1:]}
    assert " built in " in cells["toy-clt"]
    assert " 4.4 GB " in cells["gpt2-clt-16k"]  # 12 layers x 768 x 16 000, float32
    assert " 7.9 GB " in cells["gemma-2-2b-gemmascope"]  # 26 x ~302 MB npz files
    assert " ? " in cells["qwen3-8b-plt"]  # its feature count is not known
    rows = json.loads(CliRunner().invoke(app, ["presets", "--format", "json"]).output)
    sizes = {row["name"]: row["download_bytes"] for row in rows}
    assert sizes["toy-plt"] == 0 and sizes["qwen3-8b-plt"] is None


def test_the_published_sets_carry_circuit_tracers_demo_prompts() -> None:
    assert (
        "Fact: the capital of the state containing Dallas is"
        in preset_named("gemma-2-2b-gemmascope").prompts
    )
    assert preset_named("llama-3.2-1b-plt").prompts[0] == "Because the manager retired the project"


@pytest.mark.parametrize(
    ("preset", "first_prompt"),
    [
        ("gemma-2-2b-clt-426k", "Fact: the capital of the state containing Dallas is"),
        ("toy-clt", NOTEBOOK_PROMPT),
    ],
)
def test_a_preset_run_without_prompts_runs_the_presets_own_or_the_builtin_suite(
    monkeypatch: pytest.MonkeyPatch, preset: str, first_prompt: str
) -> None:
    import tracerflow.cli.run as run_command

    requests = []
    monkeypatch.setattr(run_command, "_run_scoring", requests.append)
    result = CliRunner().invoke(app, ["run", "--preset", preset])
    assert result.exit_code == 0, result.output
    (request,) = requests
    assert request.prompts[0] == first_prompt
    assert len(request.prompts) == len(preset_named(preset).prompts or BUILTIN_PROMPTS)
