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
from tracerflow.transcoders.conversion import convert, parse_dtype


def convert_key(content_hash: str, dtype: str) -> str:
    return stage_key("convert", CONVERTER_VERSION, checkpoint=content_hash, dtype=dtype)


def convert_snapshot(
    snapshot: CheckpointSnapshot, dtype: str, store: ArtifactStore
) -> ConvertedTranscoder:
    """Convert unless the store already has this (content, dtype); return the converted folder
    and what later stages need to know about the transcoder."""
    key = convert_key(snapshot.content_hash, dtype)
    folder = store.find("convert", key)
    cached = folder is not None
    if folder is None:
        folder = store.path("convert", key)
        convert(Path(snapshot.path), folder, dtype=parse_dtype(dtype), overwrite=True)
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


@stage_task("convert")
def convert_task(
    snapshot: CheckpointSnapshot, dtype: str, store: ArtifactStore
) -> ConvertedTranscoder:
    return convert_snapshot(snapshot, dtype, store)
