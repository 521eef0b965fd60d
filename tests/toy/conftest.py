"""Fixtures of the toy-preset tests: the shipped transcoders converted once, models on CPU.

Everything here runs offline: ``HF_HUB_OFFLINE=1`` is forced before any Hugging Face library is
imported by a test.
"""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest
import torch

from tracerflow import toy
from tracerflow.models import ReplacementModel, load_replacement_model
from tracerflow.transcoders import convert, load_converted

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def converted_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each shipped checkpoint (clt, plt, jumprelu-clt) converted to circuit-tracer files."""
    root = tmp_path_factory.mktemp("converted")
    return {name: convert(toy.transcoder_dir(name), root / name) for name in toy.TRANSCODER_FOLDERS}


@pytest.fixture(scope="session")
def toy_clt_model(converted_dirs: dict[str, Path]) -> ReplacementModel:
    """The toy model with its trained CLT, on CPU."""
    return load_replacement_model("toy-gpt2", load_converted(converted_dirs["clt"], "cpu"), "cpu")
