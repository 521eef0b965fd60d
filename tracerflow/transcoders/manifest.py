"""``tracerflow.json``: what a converted folder holds and where it came from."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ValidationError

from tracerflow.errors import CheckpointError

MANIFEST_FILE = "tracerflow.json"
# Bump when the files `convert` writes change in any way: it is part of every cache key.
CONVERTER_VERSION = "1"


class ActivationSpec(BaseModel):
    # what the source called it: a crosslayer-transcoder class (PerLayerTopK, JumpReLU,
    # BatchTopK, ...) or, for a circuit-tracer folder, TopK, JumpReLU or ReLU
    source: str
    name: Literal["topk", "jump_relu", "relu"]
    k: int | None = None


class Manifest(BaseModel):
    format: Literal["tracerflow-converted"] = "tracerflow-converted"
    converter_version: str = CONVERTER_VERSION
    tracerflow_version: str
    kind: Literal["clt", "plt"]
    n_layers: int
    d_model: int
    d_features: int
    activation: ActivationSpec
    feature_input_hook: str = "hook_resid_mid"
    feature_output_hook: str = "hook_mlp_out"
    dtype: str
    # None: the source had no standardizers to fold (a circuit-tracer folder).
    source_was_folded: bool | None
    source_files_sha256: dict[str, str]
    content_hash: str  # sha256 over the source files' hashes: the transcoder's identity

    def write(self, folder: Path) -> None:
        (folder / MANIFEST_FILE).write_text(self.model_dump_json(indent=2) + "\n")


def read_manifest(folder: str | Path) -> Manifest:
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path}: missing; {folder} is not a folder written by `tracerflow convert`"
        )
    try:
        return Manifest.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as error:
        raise CheckpointError(f"{path}: not a valid tracerflow manifest ({error})") from error
