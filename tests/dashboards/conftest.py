"""Fixtures of the dashboard tests: the toy model with its CLT and PLT, and a corpus of grammar
sentences tokenized with the toy tokenizer, cut into BOS-led windows of ``SEQ_LEN`` tokens."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest
import torch

from tracerflow import toy
from tracerflow.models import ReplacementModel, load_replacement_model
from tracerflow.toy.grammar import sample_sentences
from tracerflow.transcoders import convert, load_converted

torch.set_num_threads(1)

SEQ_LEN = 24


@pytest.fixture(scope="session")
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("converted")
    return {name: convert(toy.transcoder_dir(name), root / name) for name in ("clt", "plt")}


@pytest.fixture(scope="session")
def models(converted: dict[str, Path]) -> dict[str, ReplacementModel]:
    return {
        name: load_replacement_model("toy-gpt2", load_converted(path, "cpu"), "cpu")
        for name, path in converted.items()
    }


def corpus_sequences(model: ReplacementModel, n_sentences: int, seed: int = 7) -> torch.Tensor:
    """``[n, SEQ_LEN]``: held-out grammar text as one token stream, in windows led by BOS."""
    tokenizer = model.tokenizer
    stream: list[int] = []
    for sentence in sample_sentences(n_sentences, held_out=True, seed=seed):
        stream += tokenizer(" " + sentence.text)["input_ids"]
    body = SEQ_LEN - 1
    n = len(stream) // body
    windows = torch.tensor(stream[: n * body]).view(n, body)
    return torch.cat([torch.full((n, 1), tokenizer.bos_token_id), windows], dim=1)


@pytest.fixture(scope="session")
def corpus(models: dict[str, ReplacementModel]) -> torch.Tensor:
    return corpus_sequences(models["clt"], 300)
