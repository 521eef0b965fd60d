"""Write a transcoder of any source format as circuit-tracer transcoder files.

CLTs in the layout of circuit-tracer's ``load_clt``, PLTs in that of ``load_transcoder_set``, plus
``tracerflow.json`` (``Manifest``). Each format's reader writes the tensors (``write_files``: a
checkpoint one layer at a time, a circuit-tracer folder as a verified copy); this module adds the
manifest and makes the folder atomic. The file layout: docs/checkpoints.md.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

import tracerflow
from tracerflow.errors import CheckpointError
from tracerflow.fsutil import atomic_directory, is_complete
from tracerflow.transcoders.formats import read_source
from tracerflow.transcoders.formats.base import ConvertibleSource
from tracerflow.transcoders.manifest import ActivationSpec, Manifest

if TYPE_CHECKING:  # imported where a dtype is made: a stored conversion is found without torch
    import torch

DTYPE_NAMES = ("float32", "float16", "bfloat16")  # torch's names for them, too


def dtype_name(dtype: torch.dtype) -> str:
    name = str(dtype).removeprefix("torch.")
    if name not in DTYPE_NAMES:
        raise CheckpointError(f"unsupported dtype {dtype}; use one of {', '.join(DTYPE_NAMES)}")
    return name


def parse_dtype(name: str) -> torch.dtype:
    if name not in DTYPE_NAMES:
        raise CheckpointError(f"unsupported dtype '{name}'; use one of {', '.join(DTYPE_NAMES)}")
    import torch

    return getattr(torch, name)  # type: ignore[no-any-return]


def content_hash(file_hashes: dict[str, str]) -> str:
    """One sha256 for a set of files, independent of where they live."""
    digest = hashlib.sha256()
    for name in sorted(file_hashes):
        digest.update(f"{name}\0{file_hashes[name]}\n".encode())
    return digest.hexdigest()


def convert(
    checkpoint_dir: str | Path,
    out_dir: str | Path,
    dtype: torch.dtype | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Convert the checkpoint in ``checkpoint_dir`` (of a format the registry,
    ``tracerflow.transcoders.formats``, reads) into circuit-tracer files in ``out_dir``.

    Atomic: everything is written to a temporary sibling folder that is renamed into place
    after the manifest; on any error no ``out_dir`` is left behind (or the old one is kept).
    ``dtype`` None: float32. Returns ``out_dir``.
    """
    dtype = dtype if dtype is not None else parse_dtype("float32")
    checkpoint = read_source(checkpoint_dir)
    out_dir = Path(out_dir).expanduser()
    if out_dir.exists() and not overwrite:
        state = "a finished conversion" if is_complete(out_dir) else "a folder"
        raise CheckpointError(f"{out_dir}: already exists ({state}); choose another output folder")
    with atomic_directory(out_dir, overwrite=True) as tmp_dir:
        write_converted(checkpoint, tmp_dir, dtype)
    return out_dir


def write_converted(source: ConvertibleSource, out_dir: Path, dtype: torch.dtype) -> None:
    """Write the files of ``convert`` into the existing folder ``out_dir``, not atomically: for a
    caller that commits the folder itself (``convert``, the artifact store's convert stage)."""
    file_hashes = source.file_hashes()
    source.write_files(out_dir, dtype)
    Manifest(
        tracerflow_version=tracerflow.__version__,
        kind=source.kind,
        n_layers=source.n_layers,
        d_model=source.d_model,
        d_features=source.d_features,
        activation=ActivationSpec(
            source=source.activation.source,
            name=source.activation.name,
            k=source.activation.k,
        ),
        feature_input_hook=source.feature_input_hook,
        feature_output_hook=source.feature_output_hook,
        dtype=dtype_name(dtype),
        source_was_folded=source.is_folded,
        source_files_sha256=file_hashes,
        content_hash=content_hash(file_hashes),
    ).write(out_dir)
