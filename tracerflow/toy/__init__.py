"""The built-in toy preset: a tiny GPT-2-style model trained on an IOI grammar, its tokenizer and
three trained transcoders, all shipped as package data under ``tracerflow/toy/data/``.

``python -m tracerflow.toy.train`` regenerates the data (deterministic; see ``train.py``).
This module only locates the files; ``tracerflow.models`` builds the model from them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tracerflow.errors import ConfigError

TOY_MODEL_NAME = "toy-gpt2"
TRANSCODER_FOLDERS = ("clt", "plt", "jumprelu-clt")
EVAL_CORPUS_FILE = "eval-corpus.txt"


def data_dir() -> Path:
    """``tracerflow/toy/data`` of the installed package (must be real files, not a zip)."""
    from tracerflow.presets import resolve_package_path

    return resolve_package_path("package:tracerflow.toy/data")


def tokenizer_dir() -> Path:
    """The GPT-2-format tokenizer folder (``vocab.json``, ``merges.txt``, configs)."""
    return data_dir() / "tokenizer"


def model_dir() -> Path:
    """``config.json`` (HookedTransformerConfig fields) and ``model.safetensors``."""
    return data_dir() / "model"


def transcoder_dir(name: str) -> Path:
    """One of the checkpoint folders (crosslayer-transcoder format): clt, plt, jumprelu-clt."""
    if name not in TRANSCODER_FOLDERS:
        raise ConfigError(f"no toy transcoder '{name}'; known: {', '.join(TRANSCODER_FOLDERS)}")
    return data_dir() / name


def eval_corpus_path() -> Path:
    """The held-out evaluation corpus (one sentence per line; ``grammar.eval_corpus_texts``)."""
    return data_dir() / EVAL_CORPUS_FILE


def training_record() -> dict[str, Any]:
    """``training.json``: steps, final losses, held-out accuracy, per-layer FVU and L0."""
    return json.loads((data_dir() / "training.json").read_text())
