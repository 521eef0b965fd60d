"""The transcoder library: read crosslayer-transcoder checkpoints, convert them exactly to
circuit-tracer's files, and load those with the exact activation. No Prefect in here."""

from tracerflow.errors import CheckpointError
from tracerflow.transcoders.activations import PerLayerTopK
from tracerflow.transcoders.checkpoint import Activation, Checkpoint, read_checkpoint
from tracerflow.transcoders.conversion import convert
from tracerflow.transcoders.load import Transcoder, load_converted
from tracerflow.transcoders.manifest import CONVERTER_VERSION, Manifest, read_manifest

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
