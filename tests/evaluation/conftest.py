"""Fixtures of the evaluation tests: the toy transcoders' replacement models, a plain-torch
reference model and the shipped held-out corpus, all offline on CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.evaluation.reference import plain_toy_model
from tests.toy.conftest import converted_dirs  # noqa: F401 (offline env, 1 thread, converted once)
from tracerflow import toy
from tracerflow.corpus import TokenCorpus
from tracerflow.models import load_replacement_model
from tracerflow.transcoders import load_converted


@pytest.fixture(scope="session")
def toy_models(converted_dirs: dict[str, Path]) -> dict[str, Any]:  # noqa: F811
    """The toy ReplacementModel with each of its transcoders (clt, plt, jumprelu-clt)."""
    return {
        name: load_replacement_model("toy-gpt2", load_converted(folder, "cpu"), "cpu")
        for name, folder in converted_dirs.items()
    }


@pytest.fixture(scope="session")
def reference_model() -> Any:
    return plain_toy_model(toy.model_dir(), toy.tokenizer_dir())


@pytest.fixture(scope="session")
def eval_corpus(toy_models: dict[str, Any]) -> TokenCorpus:
    """The toy preset's shipped held-out corpus (4 103 tokens)."""
    model = toy_models["clt"]
    return TokenCorpus.from_file(toy.eval_corpus_path(), model.tokenizer, model.cfg.n_ctx)
