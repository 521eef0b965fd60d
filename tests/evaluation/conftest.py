"""Fixtures of the evaluation tests: the toy transcoders converted once, their replacement models
and a plain-torch reference model, all offline on CPU."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path
from typing import Any

import pytest
import torch

from tests.evaluation.reference import plain_toy_model
from tracerflow import toy
from tracerflow.corpus import TokenCorpus
from tracerflow.models import load_replacement_model
from tracerflow.transcoders import convert, load_converted

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """clt, plt and jumprelu-clt of the toy preset, converted to circuit-tracer files."""
    root = tmp_path_factory.mktemp("toy-converted")
    return {name: convert(toy.transcoder_dir(name), root / name) for name in toy.TRANSCODER_FOLDERS}


@pytest.fixture(scope="session")
def toy_models(toy_converted: dict[str, Path]) -> dict[str, Any]:
    """The toy ReplacementModel with each of its transcoders."""
    return {
        name: load_replacement_model("toy-gpt2", load_converted(folder, "cpu"), "cpu")
        for name, folder in toy_converted.items()
    }


@pytest.fixture(scope="session")
def reference_model() -> Any:
    return plain_toy_model(toy.model_dir(), toy.tokenizer_dir())


@pytest.fixture(scope="session")
def eval_corpus(toy_models: dict[str, Any]) -> TokenCorpus:
    """The toy preset's shipped held-out corpus (4 103 tokens)."""
    model = toy_models["clt"]
    return TokenCorpus.from_file(toy.eval_corpus_path(), model.tokenizer, model.cfg.n_ctx)
