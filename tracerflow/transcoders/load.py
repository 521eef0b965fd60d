"""Load a converted folder as circuit-tracer transcoder objects, with the exact activation.

ReLU and JumpReLU-style activations load through circuit-tracer's own loaders unchanged; for
PerLayerTopK, which circuit-tracer cannot express, ``PerLayerTopK`` is installed as the loaded
objects' ``activation_function`` (why that is exact: docs/checkpoints.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
from circuit_tracer.transcoder import TranscoderSet, load_transcoder_set
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder, load_clt

from tracerflow.compat import circuit_tracer_mismatch
from tracerflow.errors import CheckpointError
from tracerflow.fsutil import is_complete
from tracerflow.machine import default_device
from tracerflow.transcoders.activations import PerLayerTopK
from tracerflow.transcoders.conversion import parse_dtype
from tracerflow.transcoders.manifest import Manifest, read_manifest

Transcoder = CrossLayerTranscoder | TranscoderSet


def load_converted(
    out_dir: str | Path,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    *,
    scan: str | None = None,
    lazy_decoder: bool = True,
) -> Transcoder:
    """Load a folder written by ``convert``.

    Returns a ``CrossLayerTranscoder`` (CLT) or a ``TranscoderSet`` (PLT) ready for
    ``ReplacementModel``: ``obj.encode(x)`` with ``x [n_layers, n_pos, d_model]`` gives the features
    ``[n_layers, n_pos, F]``. ``device`` defaults to CUDA when available, else CPU; ``dtype`` to the
    dtype the folder was written in. ``scan`` names the features for the viewer.
    """
    out_dir = Path(out_dir).expanduser()
    if not out_dir.is_dir():
        raise CheckpointError(f"{out_dir}: converted folder does not exist")
    if not is_complete(out_dir):
        raise CheckpointError(f"{out_dir}: incomplete conversion (no _SUCCESS marker)")
    manifest = read_manifest(out_dir)
    mismatch = circuit_tracer_mismatch()
    if mismatch is not None:
        raise CheckpointError(f"cannot load {out_dir} with its exact activation: {mismatch}")
    device = torch.device(device if device is not None else default_device())
    dtype = dtype or parse_dtype(manifest.dtype)
    scan = scan or f"tracerflow-{manifest.content_hash[:12]}"
    activation = PerLayerTopK(manifest.activation.k) if manifest.activation.name == "topk" else None

    if manifest.kind == "clt":
        clt = load_clt(
            str(out_dir),
            feature_input_hook=manifest.feature_input_hook,
            feature_output_hook=manifest.feature_output_hook,
            scan=scan,
            device=device,
            dtype=dtype,
            lazy_decoder=lazy_decoder,
        )
        _check_activation(clt.activation_function, manifest, out_dir)
        if activation is not None:
            clt.activation_function = activation
        return clt

    transcoder_set = load_transcoder_set(
        {layer: str(out_dir / f"layer_{layer}.safetensors") for layer in range(manifest.n_layers)},
        scan=scan,
        feature_input_hook=manifest.feature_input_hook,
        feature_output_hook=manifest.feature_output_hook,
        device=device,
        dtype=dtype,
        lazy_encoder=False,
        lazy_decoder=False,
    )
    for transcoder in transcoder_set:
        _check_activation(transcoder.activation_function, manifest, out_dir)
        if activation is not None:
            transcoder.activation_function = activation
    return transcoder_set


def _check_activation(loaded: object, manifest: Manifest, out_dir: Path) -> None:
    """circuit-tracer picks the activation from the files: make sure it read what we wrote."""
    has_threshold = hasattr(loaded, "threshold")
    if has_threshold != (manifest.activation.name == "jump_relu"):
        raise CheckpointError(
            f"{out_dir}: circuit-tracer loaded a {'JumpReLU' if has_threshold else 'ReLU'} "
            f"activation but the manifest says {manifest.activation.name}; the folder is damaged"
        )
