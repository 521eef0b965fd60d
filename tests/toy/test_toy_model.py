"""The toy model: trained (it solves its grammar), reproducible to load, and fully offline."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoTokenizer

from tracerflow import toy
from tracerflow.errors import ConfigError, SourceError
from tracerflow.models import (
    ReplacementModel,
    load_replacement_model,
    toy_model_config,
)
from tracerflow.toy.grammar import NAMES, builtin_sentences, sample_sentences
from tracerflow.transcoders import load_converted

ACCURACY_FLOOR = 0.9  # chance is 1/16 (one of the grammar's 16 names)


def _next_token_ids(model: ReplacementModel, prompts: list[str]) -> list[int]:
    predictions = []
    for prompt in prompts:
        tokens = model.ensure_tokenized(prompt)
        with torch.no_grad():
            predictions.append(int(model(tokens.unsqueeze(0))[0, -1].argmax()))
    return predictions


def test_tokenizer_folder_loads_offline_with_a_nonzero_bos() -> None:
    tokenizer = AutoTokenizer.from_pretrained(str(toy.tokenizer_dir()))
    assert tokenizer.bos_token == tokenizer.eos_token == "<|endoftext|>"
    assert tokenizer.bos_token_id == len(tokenizer) - 1 > 0
    for name in NAMES:
        assert len(tokenizer(" " + name).input_ids) == 1, name


def test_model_config_is_a_small_gpt2() -> None:
    cfg = toy_model_config()
    assert cfg.original_architecture == "GPT2LMHeadModel"
    assert cfg.normalization_type == "LN" and cfg.act_fn.startswith("gelu")
    assert 2 <= cfg.n_layers <= 4 and 64 <= cfg.d_model <= 128 and cfg.n_ctx >= 64
    assert cfg.tokenizer_name == str(toy.tokenizer_dir())


def test_trained_model_predicts_the_indirect_object_on_held_out_sentences(
    toy_clt_model: ReplacementModel,
) -> None:
    sentences = sample_sentences(200, held_out=True, seed=2024)
    tokenizer = toy_clt_model.tokenizer
    predicted = _next_token_ids(toy_clt_model, [s.prompt for s in sentences])
    answers = [tokenizer(s.answer).input_ids[0] for s in sentences]
    accuracy = sum(p == a for p, a in zip(predicted, answers, strict=True)) / len(sentences)
    print(f"held-out IO accuracy: {accuracy:.3f} (chance {1 / len(NAMES):.3f})")
    assert accuracy >= ACCURACY_FLOOR


def test_trained_model_answers_every_builtin_prompt(toy_clt_model: ReplacementModel) -> None:
    sentences = builtin_sentences()
    predicted = _next_token_ids(toy_clt_model, [s.prompt for s in sentences])
    decoded = [toy_clt_model.tokenizer.decode([token]) for token in predicted]
    assert decoded == [s.answer for s in sentences]


def test_loading_twice_gives_identical_logits(converted_dirs: dict[str, Path]) -> None:
    prompt = builtin_sentences()[0].prompt
    logits = []
    for _ in range(2):
        model = load_replacement_model("toy-gpt2", load_converted(converted_dirs["plt"], "cpu"))
        with torch.no_grad():
            logits.append(model(model.ensure_tokenized(prompt).unsqueeze(0)))
    assert torch.equal(logits[0], logits[1])


def test_replacement_model_computes_the_same_logits_as_the_trained_hooked_transformer(
    toy_clt_model: ReplacementModel,
) -> None:
    from transformer_lens import HookedTransformer

    plain = HookedTransformer(toy_model_config())
    plain.load_state_dict(load_file(str(toy.model_dir() / "model.safetensors")), strict=False)
    tokens = toy_clt_model.ensure_tokenized(builtin_sentences()[1].prompt).unsqueeze(0)
    with torch.no_grad():
        assert torch.equal(toy_clt_model(tokens), plain(tokens))


def test_loading_does_not_touch_the_global_random_state(converted_dirs: dict[str, Path]) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_replacement_model("toy-gpt2", load_converted(converted_dirs["clt"], "cpu"), "cpu")
    assert torch.equal(torch.rand(3), expected)


def test_nothing_opens_a_socket_from_loading_to_attribution(
    converted_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from circuit_tracer import attribute

    opened: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        opened.append(address)
        raise OSError("the toy preset must not use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    model = load_replacement_model("toy-gpt2", load_converted(converted_dirs["clt"], "cpu"), "cpu")
    attribute(builtin_sentences()[0].prompt, model, batch_size=64, verbose=False)
    assert opened == []


def test_a_real_model_offline_and_not_cached_fails_fast_naming_the_download(
    converted_dirs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    transcoders = load_converted(converted_dirs["clt"], "cpu")
    started = time.perf_counter()
    with pytest.raises(SourceError) as error:
        load_replacement_model("gpt2", transcoders, "cpu")
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert (
        "'gpt2'" in message
        and "HF_HUB_OFFLINE" in message
        and "huggingface-cli download" in message
    )


def test_a_real_model_without_network_fails_fast_with_how_to_go_offline(
    converted_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    def unreachable(*args: object, **kwargs: object) -> socket.socket:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", unreachable)
    transcoders = load_converted(converted_dirs["clt"], "cpu")
    started = time.perf_counter()
    with pytest.raises(SourceError) as error:
        load_replacement_model("gpt2", transcoders, "cpu")
    assert time.perf_counter() - started < 5
    message = str(error.value)
    assert "'gpt2'" in message and "unreachable" in message and "HF_HUB_OFFLINE=1" in message


def test_an_unknown_model_name_is_a_config_error(converted_dirs: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="no-such-model"):
        load_replacement_model("no-such-model", load_converted(converted_dirs["clt"], "cpu"))


def test_the_door_knows_the_model_names_transformer_lens_knows() -> None:
    """The door reads TransformerLens's list of names without importing it (no torch); it
    resolves every name and alias, in any case, as TransformerLens itself does."""
    from transformer_lens.loading_from_pretrained import get_official_model_name
    from transformer_lens.supported_models import MODEL_ALIASES, OFFICIAL_MODEL_NAMES

    from tracerflow.model_sources import official_model_name

    names = [*OFFICIAL_MODEL_NAMES, *(alias for a in MODEL_ALIASES.values() for alias in a)]
    for name in [*names, *(name.upper() for name in names)]:
        assert official_model_name(name) == get_official_model_name(name), name
    with pytest.raises(ConfigError, match="unknown model 'no-such-model'"):
        official_model_name("no-such-model")


def test_model_config_file_holds_plain_hooked_transformer_fields() -> None:
    fields = json.loads((toy.model_dir() / "config.json").read_text())
    assert fields["model_name"] == "toy-gpt2"
    assert "tokenizer_name" not in fields  # set at load time: no path of a checkout is stored
