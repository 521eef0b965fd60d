"""The evaluate stage: the toy's recorded FVU and L0 come back through it, its store folder is its
cache (safetensors and JSON, no pickle), its key follows what determines the numbers, and the
flow's corpus precedence."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # the toy only; no Hugging Face library may go online

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tracerflow import toy
from tracerflow.evaluation import PerTokenValues
from tracerflow.flows.evaluation import evaluation_corpus
from tracerflow.model_sources import model_identity
from tracerflow.parameters import RunRequest
from tracerflow.storage.artifacts import ArtifactStore
from tracerflow.tasks.convert import convert_snapshot
from tracerflow.tasks.download import download
from tracerflow.tasks.evaluate import (
    EVALUATION_FILE,
    PER_TOKEN_FILE,
    EvaluationCorpus,
    evaluate_converted,
    evaluate_key,
)
from tracerflow.tasks.results import ConvertedTranscoder, ModelSpec
from tracerflow.toy.grammar import sample_sentences
from tracerflow.toy.train import N_EVAL_SENTENCES, SEED

TOY = ModelSpec(name="toy-gpt2", identity=model_identity("toy-gpt2"), dtype="float32", device="cpu")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> ArtifactStore:
    torch.set_num_threads(1)
    return ArtifactStore(tmp_path_factory.mktemp("artifacts"))


@pytest.fixture(scope="module")
def converted(store: ArtifactStore) -> dict[str, ConvertedTranscoder]:
    return {
        name: convert_snapshot(download(name, store), "float32", store)
        for name in ("toy-clt", "toy-plt")
    }


def held_out_sentences() -> list[str]:
    """The sentences train.py measured its held-out FVU and L0 on (training.json)."""
    return [s.text for s in sample_sentences(N_EVAL_SENTENCES, held_out=True, seed=SEED + 3)]


def test_the_stage_reproduces_the_fvu_and_l0_training_recorded(
    converted: dict[str, ConvertedTranscoder], store: ArtifactStore
) -> None:
    """The same tokens as train.py's (one sentence a window), through the cached stage: the
    recorded digits (FVU 5 decimals, L0 3), as tests/evaluation checks the function itself."""
    record = toy.training_record()["transcoders"]
    corpus = EvaluationCorpus.of_prompts(held_out_sentences(), max_tokens=None)
    for source, name in (("toy-clt", "clt"), ("toy-plt", "plt")):
        result = evaluate_converted(TOY, converted[source], corpus, store)
        layers = result.metrics.layers
        assert [row.fvu for row in layers] == pytest.approx(
            record[name]["held_out_fvu_per_layer"], rel=1e-3, abs=1e-5
        ), name
        assert [row.l0 for row in layers] == pytest.approx(
            record[name]["held_out_l0_per_layer"], abs=2e-3
        ), name


def test_a_second_evaluation_is_read_from_the_store_bit_for_bit(
    converted: dict[str, ConvertedTranscoder], store: ArtifactStore
) -> None:
    corpus = EvaluationCorpus.of_file(toy.eval_corpus_path(), max_tokens=600)
    first = evaluate_converted(TOY, converted["toy-clt"], corpus, store)
    again = evaluate_converted(TOY, converted["toy-clt"], corpus, store)

    assert (first.cached, again.cached) == (False, True)
    assert again.metrics == first.metrics
    assert again.corpus == first.corpus
    assert first.corpus.n_tokens == first.metrics.n_tokens == 600  # the cap; BOS in neither
    folder = Path(first.per_token_path).parent
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith("_")) == sorted(
        [EVALUATION_FILE, PER_TOKEN_FILE]
    )


def test_the_per_token_values_are_saved_in_corpus_order_and_add_up_to_the_metrics(
    converted: dict[str, ConvertedTranscoder], store: ArtifactStore
) -> None:
    corpus = EvaluationCorpus.of_file(toy.eval_corpus_path(), max_tokens=600)
    result = evaluate_converted(TOY, converted["toy-plt"], corpus, store)
    per_token = PerTokenValues(**load_file(result.per_token_path))

    assert per_token.kl.shape == (result.metrics.n_tokens,)
    assert float(per_token.kl.double().mean()) == pytest.approx(
        result.metrics.fidelity.kl, rel=1e-6
    )
    assert float(per_token.active.double().sum(0).mean()) == pytest.approx(
        result.metrics.all_layers.l0, rel=1e-12
    )
    assert float(per_token.top1_agree.double().mean()) == pytest.approx(
        result.metrics.fidelity.top1_agreement, rel=1e-12
    )


def test_the_key_changes_with_the_tokens_the_cap_the_transcoder_and_the_dtype(
    converted: dict[str, ConvertedTranscoder],
) -> None:
    clt, plt = converted["toy-clt"], converted["toy-plt"]
    prompts = EvaluationCorpus.of_prompts(["Mary and John went"], max_tokens=None)
    base = evaluate_key(TOY, clt, prompts, 1024)
    assert evaluate_key(TOY, clt, prompts, 1024) == base
    others = {
        evaluate_key(TOY, plt, prompts, 1024),
        evaluate_key(TOY, clt, EvaluationCorpus.of_prompts(["Mary and Tom went"], None), 1024),
        evaluate_key(TOY, clt, EvaluationCorpus.of_prompts(["Mary and John went"], 3), 1024),
        evaluate_key(TOY, clt, prompts, 64),
        evaluate_key(TOY.model_copy(update={"dtype": "bfloat16"}), clt, prompts, 1024),
    }
    assert base not in others and len(others) == 5


def test_the_corpus_is_the_request_s_then_the_preset_s_then_the_prompts(tmp_path: Path) -> None:
    mine = tmp_path / "mine.txt"
    mine.write_text("Alice and Bob went to the park\n")
    prompts = ["Mary and John went to the store, John gave a drink to"]

    given = evaluation_corpus(
        "toy-clt", RunRequest(transcoders=["toy-clt"], prompts=prompts, eval_corpus=str(mine))
    )
    preset = evaluation_corpus(
        "toy-clt", RunRequest(transcoders=["toy-clt"], prompts=prompts, eval_tokens=50)
    )
    folder = evaluation_corpus(
        str(tmp_path), RunRequest(transcoders=[str(tmp_path)], prompts=prompts)
    )

    assert given.path == str(mine.resolve())
    assert preset.path == str(toy.eval_corpus_path().resolve()) and preset.max_tokens == 50
    assert folder.path is None and folder.texts == prompts and folder.name == "prompts"
