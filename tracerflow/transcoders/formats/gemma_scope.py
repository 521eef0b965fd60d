"""GemmaScope transcoders: one ``params.npz`` a layer, as ``google/gemma-scope-2b-pt-transcoders``
lays them out (``layer_{i}/width_16k/average_l0_{n}/params.npz``) and circuit-tracer's
``load_gemma_scope_transcoder`` reads them (JumpReLU per-layer transcoders; the arrays:
``layer_files``).

A folder of this format holds exactly one ``params.npz`` under each ``layer_{i}/`` (any depth),
layers 0..n-1. The Hub repo itself holds several sparsity variants per layer: circuit-tracer picks
one a layer through a config's ``transcoders:`` list (``mntss/gemma-scope-transcoders``), which
tracerflow reads as a circuit-tracer Hub config (``hub_config``); so a Hub run never downloads
this format's files by pattern. Detecting reads names only; checking reads the ``.npy`` headers
(no torch); reading the arrays uses numpy's ``allow_pickle=False`` only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tracerflow.errors import CheckpointError
from tracerflow.transcoders.formats.base import SourceFormat
from tracerflow.transcoders.formats.layer_files import (
    PerLayerFiles,
    check_layers,
    file_sha256,
    per_layer_activation,
)

TITLE = "GemmaScope params.npz transcoders"
FILE_PATTERN = "layer_*/**/params.npz"
# GemmaScope's own hooks for its MLP transcoders on Gemma-2 (mntss/gemma-scope-transcoders'
# config): the MLP's normalised input, the MLP's output.
HOOKS = ("ln2.hook_normalized", "hook_mlp_out")
_LAYER_FILE = re.compile(r"^layer_(0|[1-9][0-9]*)/(?:[^/]+/)*params\.npz$")


def _layer_files(folder: Path) -> dict[int, list[str]]:
    """Every ``params.npz`` under a ``layer_{i}/`` folder, by layer, as paths in the folder."""
    found: dict[int, list[str]] = {}
    if not folder.is_dir():
        return found
    for path in folder.glob("layer_*/**/params.npz"):
        name = path.relative_to(folder).as_posix()
        match = _LAYER_FILE.match(name)
        if match and path.is_file():
            found.setdefault(int(match.group(1)), []).append(name)
    return {layer: sorted(names) for layer, names in sorted(found.items())}


def detect(folder: Path) -> float:
    return 1.0 if _layer_files(folder) else 0.0


def files(folder: Path) -> tuple[str, ...]:
    return tuple(name for names in _layer_files(folder).values() for name in names)


def read_folder(folder: str | Path) -> PerLayerFiles:
    """Check a GemmaScope folder from its names and ``.npy`` headers; ``CheckpointError`` naming
    a missing layer, a layer with several files, or an array missing, extra or misshapen."""
    folder = Path(folder).expanduser()
    found = _layer_files(folder)
    if not found:
        raise CheckpointError(f"{folder}: no layer_{{i}}/.../params.npz files")
    n_layers = max(found) + 1
    missing = [layer for layer in range(n_layers) if layer not in found]
    if missing:
        raise CheckpointError(
            f"{folder}: no params.npz under layer_{missing[0]}/; a {n_layers}-layer GemmaScope "
            "set needs one file for every layer"
        )
    several = next((names for names in found.values() if len(names) > 1), None)
    if several is not None:
        raise CheckpointError(
            f"{folder}: several params.npz for one layer ({', '.join(several[:3])}); keep one "
            "per layer, or pick them with a circuit-tracer config.yaml `transcoders:` list"
        )
    names = [found[layer][0] for layer in range(n_layers)]
    shape = check_layers([(folder / name, str(folder / name)) for name in names], str(folder))
    return PerLayerFiles(
        kind="plt",
        n_layers=n_layers,
        d_model=shape.d_model,
        d_features=shape.d_features,
        activation=per_layer_activation(shape, {}, str(folder)),
        layer_paths=tuple(folder / name for name in names),
        hashes={name: file_sha256(folder / name) for name in names},
        is_folded=None,
        feature_input_hook=HOOKS[0],
        feature_output_hook=HOOKS[1],
        tensor_dtype=shape.dtype,
        skip_connection=shape.skip,
    )


def dimensions(folder: Path) -> tuple[int, int]:
    checked = read_folder(folder)
    return checked.n_layers, checked.d_model


def describe(folder: Path) -> dict[str, Any]:
    """Kind, layers, features, activation, hooks, dtype and sizes, from the ``.npy`` headers."""
    checked = read_folder(folder)
    layer_0 = checked.layer_paths[0].relative_to(folder).as_posix()
    return checked.fields(folder, TITLE, layer_0_file=layer_0)


FORMAT = SourceFormat(
    name="gemma-scope",
    title=TITLE,
    file_patterns=(FILE_PATTERN,),
    detect=detect,
    describe=describe,
    files=files,
    check=read_folder,  # the whole check short of the arrays: names and .npy headers
    read=read_folder,
    dimensions=dimensions,
    downloadable=False,
)
