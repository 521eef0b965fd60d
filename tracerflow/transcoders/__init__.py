"""The transcoder library: read crosslayer-transcoder checkpoints, convert them exactly to
circuit-tracer's files, and load those with the exact activation. No Prefect in here.

The names below are imported on first use: importing a submodule runs this file first, and the
format registry (``tracerflow.transcoders.formats``) must be importable without torch and
circuit-tracer, which ``convert`` and ``load_converted`` need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tracerflow.errors import CheckpointError
    from tracerflow.transcoders.activations import PerLayerTopK
    from tracerflow.transcoders.checkpoint import Activation, Checkpoint, read_checkpoint
    from tracerflow.transcoders.conversion import convert
    from tracerflow.transcoders.load import Transcoder, load_converted
    from tracerflow.transcoders.manifest import CONVERTER_VERSION, Manifest, read_manifest

_HOMES = {
    "CONVERTER_VERSION": "tracerflow.transcoders.manifest",
    "Activation": "tracerflow.transcoders.checkpoint",
    "Checkpoint": "tracerflow.transcoders.checkpoint",
    "CheckpointError": "tracerflow.errors",
    "Manifest": "tracerflow.transcoders.manifest",
    "PerLayerTopK": "tracerflow.transcoders.activations",
    "Transcoder": "tracerflow.transcoders.load",
    "convert": "tracerflow.transcoders.conversion",
    "load_converted": "tracerflow.transcoders.load",
    "read_checkpoint": "tracerflow.transcoders.checkpoint",
    "read_manifest": "tracerflow.transcoders.manifest",
}

__all__ = [
    "CONVERTER_VERSION",
    "Activation",
    "Checkpoint",
    "CheckpointError",
    "Manifest",
    "PerLayerTopK",
    "Transcoder",
    "convert",
    "load_converted",
    "read_checkpoint",
    "read_manifest",
]


def __getattr__(name: str) -> Any:
    """``from tracerflow.transcoders import convert`` imports ``conversion`` only then."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home), name)
