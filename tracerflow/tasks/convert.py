"""Stage 2, convert: a checkpoint folder into circuit-tracer files in the artifact store.

Keyed by the checkpoint's content hash, the converter's code version and the dtype: the same
transcoder from another path, repo or preset name converts once.
"""

from __future__ import annotations

from pathlib import Path

from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.tasks.results import CheckpointSnapshot, ConvertedTranscoder
from tracerflow.tasks.stage import stage_task
from tracerflow.transcoders import CONVERTER_VERSION, read_manifest
from tracerflow.transcoders.conversion import parse_dtype, write_converted
from tracerflow.transcoders.formats import read_source


def convert_key(content_hash: str, dtype: str) -> str:
    return stage_key("convert", CONVERTER_VERSION, checkpoint=content_hash, dtype=dtype)


def convert_snapshot(
    snapshot: CheckpointSnapshot, dtype: str, store: ArtifactStore
) -> ConvertedTranscoder:
    """Convert unless the store already has this (content, dtype); return the converted folder
    and what later stages need to know about the transcoder."""
    key = convert_key(snapshot.content_hash, dtype)

    def write(out_dir: Path) -> None:
        write_converted(read_source(snapshot.path), out_dir, parse_dtype(dtype))

    folder, cached = store.get_or_compute("convert", key, write)
    manifest = read_manifest(folder)
    return ConvertedTranscoder(
        path=str(folder),
        key=key,
        kind=manifest.kind,
        n_layers=manifest.n_layers,
        d_model=manifest.d_model,
        d_features=manifest.d_features,
        activation=manifest.activation.name,
        activation_params=manifest.activation.model_dump(exclude={"name"}),
        dtype=manifest.dtype,
        content_hash=manifest.content_hash,
        cached=cached,
    )


convert_task = stage_task("convert")(convert_snapshot)
