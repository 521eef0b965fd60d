"""The crosslayer-transcoder format: ``config.yaml`` (a ``model:`` tree of ``class_path`` /
``init_args`` nodes) and ``checkpoint.safetensors``, as the library's ``save_pretrained`` writes
them. The reader is ``tracerflow.transcoders.checkpoint``; the layout: docs/checkpoints.md."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tracerflow.transcoders.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    Checkpoint,
    read_checkpoint,
)
from tracerflow.transcoders.formats.base import SourceFormat

TITLE = "crosslayer-transcoder checkpoint"
FILES = (CONFIG_FILE, WEIGHTS_FILE)


def detect(folder: Path) -> float:
    """The share of its two files the folder holds: by name only, so that a folder with a
    broken config is still read as this format and the reader says what is wrong with it."""
    return sum((folder / name).is_file() for name in FILES) / len(FILES)


def files(folder: Path) -> tuple[str, ...]:
    return FILES


def check(folder: Path) -> None:
    """The whole reader short of the weights: the config tree (known classes, positive sizes),
    the safetensors header and every tensor's shape against the config, so a malformed
    checkpoint is refused before a run starts. No torch; the convert stage reads the tensors."""
    read_checkpoint(folder)


def dimensions(folder: Path) -> tuple[int, int]:
    checkpoint = read_checkpoint(folder)
    return checkpoint.n_layers, checkpoint.d_model


def describe(folder: Path) -> dict[str, Any]:
    """Kind, layers, features, activation, standardizers, dtype and sizes, from the config and
    the safetensors header (no weights read)."""
    return checkpoint_fields(read_checkpoint(folder), TITLE)


def checkpoint_fields(checkpoint: Checkpoint, title: str) -> dict[str, Any]:
    """What ``inspect`` shows of a checkpoint of the library's, whichever file holds it."""
    largest_tensor = max(checkpoint.tensor_shapes.items(), key=lambda item: math.prod(item[1]))
    return {
        "path": str(checkpoint.path),
        "format": title,
        "kind": checkpoint.kind,
        "n_layers": checkpoint.n_layers,
        "d_model": checkpoint.d_model,
        "d_features": checkpoint.d_features,
        "activation": checkpoint.activation.name,
        "k": checkpoint.activation.k,
        "source_activation": checkpoint.activation.source,
        "folded": checkpoint.is_folded,
        "input_standardizer": checkpoint.input_standardizer.kind,
        "output_standardizer": checkpoint.output_standardizer.kind,
        "dtype": checkpoint.tensor_dtype,
        "size_bytes": checkpoint.size_bytes(),
        "largest_tensor": f"{largest_tensor[0]} {list(largest_tensor[1])}",
    }


FORMAT = SourceFormat(
    name="crosslayer-transcoder",
    title=TITLE,
    file_patterns=FILES,
    detect=detect,
    describe=describe,
    files=files,
    check=check,
    read=read_checkpoint,
    dimensions=dimensions,
)
