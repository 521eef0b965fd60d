"""A folder ``tracerflow convert`` wrote: circuit-tracer's transcoder files and
``tracerflow.json`` (``Manifest``). ``inspect`` describes it; it is not a source to convert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tracerflow.transcoders.formats.base import FolderFormat
from tracerflow.transcoders.manifest import MANIFEST_FILE, read_manifest

TITLE = "circuit-tracer (converted by tracerflow)"


def detect(folder: Path) -> float:
    """The manifest decides: ``convert`` writes it into every folder it finishes."""
    return float((folder / MANIFEST_FILE).is_file())


def describe(folder: Path) -> dict[str, Any]:
    """Kind, layers, features, activation and dtype from the manifest; sizes of its files."""
    files = list(folder.glob("*.safetensors"))
    manifest = read_manifest(folder)
    return {
        "path": str(folder),
        "format": TITLE,
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


FORMAT = FolderFormat(
    name="tracerflow-converted",
    title=TITLE,
    file_patterns=(MANIFEST_FILE,),
    detect=detect,
    describe=describe,
)
