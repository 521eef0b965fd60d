"""What ``tracerflow inspect`` shows of a folder: a crosslayer-transcoder checkpoint or a folder
converted by tracerflow, as one flat mapping of field to value."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tracerflow.transcoders.checkpoint import read_checkpoint
from tracerflow.transcoders.manifest import MANIFEST_FILE, read_manifest


def describe_folder(path: Path) -> dict[str, Any]:
    """Kind, layers, features, activation, dtype and sizes of either kind of folder."""
    path = Path(path)
    if (path / MANIFEST_FILE).is_file():
        return _describe_converted(path)
    checkpoint = read_checkpoint(path)
    largest_tensor = max(checkpoint.tensor_shapes.items(), key=lambda item: math.prod(item[1]))
    return {
        "path": str(path),
        "format": "crosslayer-transcoder checkpoint",
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


def _describe_converted(path: Path) -> dict[str, Any]:
    files = list(path.glob("*.safetensors"))
    manifest = read_manifest(path)
    return {
        "path": str(path),
        "format": "circuit-tracer (converted by tracerflow)",
        "kind": manifest.kind,
        "n_layers": manifest.n_layers,
        "d_model": manifest.d_model,
        "d_features": manifest.d_features,
        "activation": manifest.activation.name,
        "k": manifest.activation.k,
        "source_activation": manifest.activation.source,
        "source_was_folded": manifest.source_was_folded,
        "dtype": manifest.dtype,
        "files": len(files),
        "size_bytes": sum(p.stat().st_size for p in files),
        "largest_file_bytes": max((p.stat().st_size for p in files), default=0),
        "content_hash": manifest.content_hash,
    }
