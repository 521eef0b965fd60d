"""Write a checkpoint as circuit-tracer transcoder files, one layer at a time.

CLTs in the layout of circuit-tracer's ``load_clt``, PLTs in that of ``load_transcoder_set``, plus
``tracerflow.json`` (``Manifest``); at most one layer's tensors are in memory at a time. The file
layout: docs/checkpoints.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import save_file

import tracerflow
from tracerflow.errors import CheckpointError
from tracerflow.fsutil import atomic_directory, is_complete
from tracerflow.transcoders.checkpoint import Checkpoint
from tracerflow.transcoders.formats import read_source
from tracerflow.transcoders.manifest import ActivationSpec, Manifest

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def dtype_name(dtype: torch.dtype) -> str:
    for name, value in _DTYPES.items():
        if value == dtype:
            return name
    raise CheckpointError(f"unsupported dtype {dtype}; use one of {', '.join(_DTYPES)}")


def parse_dtype(name: str) -> torch.dtype:
    if name not in _DTYPES:
        raise CheckpointError(f"unsupported dtype '{name}'; use one of {', '.join(_DTYPES)}")
    return _DTYPES[name]


def content_hash(file_hashes: dict[str, str]) -> str:
    """One sha256 for a set of files, independent of where they live."""
    digest = hashlib.sha256()
    for name in sorted(file_hashes):
        digest.update(f"{name}\0{file_hashes[name]}\n".encode())
    return digest.hexdigest()


def convert(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype = torch.float32,
    *,
    overwrite: bool = False,
) -> Path:
    """Convert the checkpoint in ``checkpoint_dir`` (of a format the registry,
    ``tracerflow.transcoders.formats``, reads) into circuit-tracer files in ``out_dir``.

    Atomic: everything is written to a temporary sibling folder that is renamed into place
    after the manifest; on any error no ``out_dir`` is left behind (or the old one is kept).
    Returns ``out_dir``.
    """
    checkpoint = read_source(checkpoint_dir)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not overwrite:
        state = "a finished conversion" if is_complete(out_dir) else "a folder"
        raise CheckpointError(f"{out_dir}: already exists ({state}); choose another output folder")
    with atomic_directory(out_dir, overwrite=True) as tmp_dir:
        write_converted(checkpoint, tmp_dir, dtype)
    return out_dir


def write_converted(checkpoint: Checkpoint, out_dir: Path, dtype: torch.dtype) -> None:
    """Write the files of ``convert`` into the existing folder ``out_dir``, not atomically: for a
    caller that commits the folder itself (``convert``, the artifact store's convert stage)."""
    file_hashes = checkpoint.file_hashes()
    if checkpoint.kind == "clt":
        _write_clt(checkpoint, out_dir, dtype)
    else:
        _write_plt(checkpoint, out_dir, dtype)
    Manifest(
        tracerflow_version=tracerflow.__version__,
        kind=checkpoint.kind,
        n_layers=checkpoint.n_layers,
        d_model=checkpoint.d_model,
        d_features=checkpoint.d_features,
        activation=ActivationSpec(
            source=checkpoint.activation.source,
            name=checkpoint.activation.name,
            k=checkpoint.activation.k,
        ),
        dtype=dtype_name(dtype),
        source_was_folded=checkpoint.is_folded,
        source_files_sha256=file_hashes,
        content_hash=content_hash(file_hashes),
    ).write(out_dir)


def _write_clt(checkpoint: Checkpoint, out_dir: Path, dtype: torch.dtype) -> None:
    with checkpoint.open_tensors() as reader:
        for layer in range(checkpoint.n_layers):
            w_enc, b_enc = reader.encoder_layer(layer, dtype)
            encoder_file = {
                f"W_enc_{layer}": w_enc,
                f"b_enc_{layer}": b_enc,
                f"b_dec_{layer}": reader.decoder_bias(layer, dtype),
            }
            thresholds = reader.thresholds(layer, dtype)
            if thresholds is not None:
                encoder_file[f"threshold_{layer}"] = thresholds
            save_file(encoder_file, out_dir / f"W_enc_{layer}.safetensors")
            del encoder_file, w_enc, b_enc
            decoder = reader.clt_decoder_from(layer, dtype)
            save_file({f"W_dec_{layer}": decoder}, out_dir / f"W_dec_{layer}.safetensors")
            del decoder


def _write_plt(checkpoint: Checkpoint, out_dir: Path, dtype: torch.dtype) -> None:
    with checkpoint.open_tensors() as reader:
        for layer in range(checkpoint.n_layers):
            w_enc, b_enc = reader.encoder_layer(layer, dtype)
            layer_file = {
                "W_enc": w_enc,
                "W_dec": reader.plt_decoder(layer, dtype),
                "b_enc": b_enc,
                "b_dec": reader.decoder_bias(layer, dtype),
            }
            thresholds = reader.thresholds(layer, dtype)
            if thresholds is not None:
                layer_file["activation_function.threshold"] = thresholds
            save_file(layer_file, out_dir / f"layer_{layer}.safetensors")
