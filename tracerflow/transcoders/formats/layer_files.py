"""Per-layer transcoder files that live one file a layer, wherever the files are: GemmaScope's
``params.npz`` and circuit-tracer's ``layer_{i}.safetensors``. The GemmaScope folder format and
circuit-tracer Hub configs (``transcoders:`` lists) both read their layers through here.

Checking a file reads only its header (the npz members' ``.npy`` headers, the safetensors JSON
header): no torch, no array data. Writing reads the arrays, npz files with numpy's
``allow_pickle=False`` only, and writes circuit-tracer's ``layer_{i}.safetensors``:

- GemmaScope ``params.npz`` (read as circuit-tracer's ``load_gemma_scope_transcoder`` reads it):
  ``W_enc`` [d_model, F] (written transposed, [F, d_model]), ``W_dec`` [F, d_model], ``b_enc``
  [F], ``b_dec`` [d_model], ``threshold`` [F] (written as ``activation_function.threshold``, as
  is: circuit-tracer's JumpReLU is ``x * (x > θ)``);
- circuit-tracer ``layer_{i}.safetensors`` (its ``load_relu_transcoder``): copied tensor by
  tensor, ``k`` left out (circuit-tracer 0.5.0 refuses it).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracerflow.errors import CheckpointError
from tracerflow.fsutil import sha256_file
from tracerflow.transcoders.checkpoint import Activation, TranscoderShape
from tracerflow.transcoders.formats.base import check_float_tensor, read_safetensors_header

if TYPE_CHECKING:
    import torch

NPZ_SUFFIX = ".npz"
SAFETENSORS_SUFFIX = ".safetensors"
# GemmaScope's params.npz: each tensor's shape in terms of F (features) and d (d_model).
NPZ_TENSORS = {
    "W_enc": ("d", "F"),
    "W_dec": ("F", "d"),
    "b_enc": ("F",),
    "b_dec": ("d",),
    "threshold": ("F",),
}
# circuit-tracer's layer file: (shape, optional); `k` is read but never written.
SAFETENSORS_TENSORS = {
    "W_enc": (("F", "d"), False),
    "W_dec": (("F", "d"), False),
    "b_enc": (("F",), False),
    "b_dec": (("d",), False),
    "activation_function.threshold": (("F",), True),
    "W_skip": (("d", "d"), True),
    "k": ((), True),
}
_NPY_FLOATS = {"<f4": "float32", "<f2": "float16", "<f8": "float64"}
_MAX_NPY_MEMBERS = 64


@dataclass(frozen=True)
class LayerShape:
    """What one layer file's header says."""

    d_features: int
    d_model: int
    dtype: str
    thresholds: bool  # JumpReLU thresholds
    skip: bool  # W_skip


def npz_header(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    """Each array of an ``.npz`` file: (shape, numpy dtype string), from the members' ``.npy``
    headers only; ``CheckpointError`` when it is not an npz of plain arrays (object arrays, which
    only pickle could read, are refused)."""
    from numpy.lib import format as npy_format

    arrays: dict[str, tuple[tuple[int, ...], str]] = {}
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > _MAX_NPY_MEMBERS:
                raise ValueError(f"{len(members)} members")
            for member in members:
                if not member.filename.endswith(".npy"):
                    raise ValueError(f"member {member.filename!r} is not an .npy array")
                with archive.open(member) as handle:
                    version = npy_format.read_magic(handle)
                    if version == (1, 0):
                        shape, _, dtype = npy_format.read_array_header_1_0(handle)
                    else:
                        shape, _, dtype = npy_format.read_array_header_2_0(handle)
                if dtype.hasobject:
                    raise ValueError(f"array {member.filename[:-4]!r} holds Python objects")
                arrays[member.filename[:-4]] = (tuple(int(n) for n in shape), dtype.str)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as error:
        raise CheckpointError(f"{path}: not a numpy .npz file of arrays ({error})") from None
    return arrays


def check_npz_layer(path: Path, label: str) -> LayerShape:
    """A GemmaScope ``params.npz``: exactly its five arrays, shaped and typed as circuit-tracer's
    GemmaScope loader reads them. ``label`` names the file in errors."""
    arrays = npz_header(path)
    if set(arrays) != set(NPZ_TENSORS):
        missing = sorted(set(NPZ_TENSORS) - set(arrays))
        extra = sorted(set(arrays) - set(NPZ_TENSORS))
        problem = f"no array '{missing[0]}'" if missing else f"unexpected array '{extra[0]}'"
        raise CheckpointError(
            f"{label}: {problem} (a GemmaScope params.npz holds {', '.join(NPZ_TENSORS)})"
        )
    enc_shape = arrays["W_enc"][0]
    if len(enc_shape) != 2 or min(enc_shape) < 1:
        raise CheckpointError(f"{label}: array 'W_enc' is not [d_model, d_features]")
    sizes = {"d": enc_shape[0], "F": enc_shape[1]}
    dtypes = set()
    for key, dims in NPZ_TENSORS.items():
        shape, dtype = arrays[key]
        want = tuple(sizes[dim] for dim in dims)
        if shape != want:
            raise CheckpointError(
                f"{label}: array '{key}' has shape {list(shape)}, but W_enc implies {list(want)}"
            )
        if dtype not in _NPY_FLOATS:
            raise CheckpointError(f"{label}: array '{key}' has dtype {dtype}, not a float type")
        dtypes.add(_NPY_FLOATS[dtype])
    dtype = "float32" if "float32" in dtypes else sorted(dtypes)[0]
    return LayerShape(sizes["F"], sizes["d"], dtype, thresholds=True, skip=False)


def check_safetensors_layer(path: Path, label: str) -> LayerShape:
    """A circuit-tracer ``layer_{i}.safetensors``: its tensors named and shaped as
    ``load_relu_transcoder`` reads them."""
    header = {k: v for k, v in read_safetensors_header(path).items() if k != "__metadata__"}
    extra = sorted(set(header) - set(SAFETENSORS_TENSORS))
    if extra:
        raise CheckpointError(
            f"{label}: unexpected tensor '{extra[0]}' (circuit-tracer's layer files hold "
            f"{', '.join(sorted(SAFETENSORS_TENSORS))})"
        )
    enc = header.get("W_enc", {})
    shape = enc.get("shape") if isinstance(enc, dict) else None
    if not shape or len(shape) != 2 or min(shape) < 1:
        raise CheckpointError(f"{label}: tensor 'W_enc' missing or not [d_features, d_model]")
    sizes = {"F": int(shape[0]), "d": int(shape[1])}
    dtypes = set()
    for key, (dims, optional) in SAFETENSORS_TENSORS.items():
        if key not in header:
            if optional:
                continue
            raise CheckpointError(f"{label}: missing tensor '{key}'")
        if key == "k":
            continue
        want = [sizes[dim] for dim in dims]
        dtypes.add(check_float_tensor(label, key, header[key], want, "W_enc"))
    dtype = "float32" if "float32" in dtypes else sorted(dtypes)[0]
    thresholds = "activation_function.threshold" in header
    return LayerShape(sizes["F"], sizes["d"], dtype, thresholds, skip="W_skip" in header)


def check_layer(path: Path, label: str) -> LayerShape:
    """One layer file by its suffix: GemmaScope ``.npz`` or circuit-tracer ``.safetensors``."""
    if path.name.endswith(NPZ_SUFFIX):
        return check_npz_layer(path, label)
    if path.name.endswith(SAFETENSORS_SUFFIX):
        return check_safetensors_layer(path, label)
    raise CheckpointError(
        f"{label}: not a layer file tracerflow reads (GemmaScope .npz or circuit-tracer "
        ".safetensors)"
    )


def check_layers(paths: list[tuple[Path, str]], where: str) -> LayerShape:
    """Every layer file checked, all of one d_model and feature count, thresholds and skip
    connections in all layers or none. ``paths`` are (file, label) in layer order."""
    if not paths:
        raise CheckpointError(f"{where}: lists no layer files")
    shapes = [check_layer(path, label) for path, label in paths]
    first = shapes[0]
    for (_, label), shape in zip(paths, shapes, strict=True):
        if (shape.d_features, shape.d_model) != (first.d_features, first.d_model):
            raise CheckpointError(
                f"{label}: {shape.d_features} features of d_model {shape.d_model}, but layer 0 "
                f"has {first.d_features} of d_model {first.d_model}"
            )
        for flag in ("thresholds", "skip"):
            if getattr(shape, flag) != getattr(first, flag):
                what = "JumpReLU thresholds" if flag == "thresholds" else "W_skip"
                raise CheckpointError(
                    f"{where}: {what} in some layers but not in {label}; circuit-tracer needs "
                    "them in every layer or none"
                )
    dtype = "float32" if any(s.dtype == "float32" for s in shapes) else first.dtype
    return LayerShape(first.d_features, first.d_model, dtype, first.thresholds, first.skip)


def layer_tensors(path: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """One layer's tensors under circuit-tracer's ``layer_{i}.safetensors`` names, in ``dtype``;
    ``CheckpointError`` for a non-finite value."""
    import torch

    if path.name.endswith(NPZ_SUFFIX):
        import numpy as np

        with np.load(path, allow_pickle=False) as arrays:
            params = {key: torch.from_numpy(np.array(arrays[key])) for key in NPZ_TENSORS}
        tensors = {
            "W_enc": params["W_enc"].T,
            "W_dec": params["W_dec"],
            "b_enc": params["b_enc"],
            "b_dec": params["b_dec"],
            "activation_function.threshold": params["threshold"],
        }
    else:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt", device="cpu") as handle:
            tensors = {key: handle.get_tensor(key) for key in handle.keys() if key != "k"}  # noqa: SIM118
    for key, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: tensor '{key}' has non-finite values (NaN or inf)")
    return {key: tensor.to(dtype).contiguous() for key, tensor in tensors.items()}


@dataclass(frozen=True)
class PerLayerFiles(TranscoderShape):
    """A per-layer transcoder held in one file a layer (``ConvertibleSource``): its identity is
    ``hashes`` (name -> sha256 of every file that makes it up, the config included);
    ``write_files`` writes circuit-tracer's ``layer_{i}.safetensors``."""

    layer_paths: tuple[Path, ...]
    hashes: dict[str, str]
    is_folded: bool | None
    feature_input_hook: str
    feature_output_hook: str
    tensor_dtype: str
    skip_connection: bool

    def file_hashes(self) -> dict[str, str]:
        return dict(self.hashes)

    def fields(self, folder: Path, title: str, **extra: Any) -> dict[str, Any]:
        """What ``inspect`` shows of it: shape, activation, hooks and dtype, then ``extra``,
        then the files' count and sizes."""
        sizes = [path.stat().st_size for path in self.layer_paths]
        return {
            "path": str(folder),
            "format": title,
            "kind": self.kind,
            "n_layers": self.n_layers,
            "d_model": self.d_model,
            "d_features": self.d_features,
            "activation": self.activation.name,
            "k": self.activation.k,
            "source_activation": self.activation.source,
            "feature_input_hook": self.feature_input_hook,
            "feature_output_hook": self.feature_output_hook,
            "skip_connection": self.skip_connection,
            "dtype": self.tensor_dtype,
            **extra,
            "files": len(sizes),
            "size_bytes": sum(sizes),
            "largest_file_bytes": max(sizes),
        }

    def write_files(self, out_dir: Path, dtype: torch.dtype) -> None:
        from safetensors.torch import save_file

        for layer, path in enumerate(self.layer_paths):
            save_file(layer_tensors(path, dtype), out_dir / f"layer_{layer}.safetensors")


def per_layer_activation(shape: LayerShape, config: dict[str, Any], where: str) -> Activation:
    """What circuit-tracer 0.5.0 runs on layer files: JumpReLU where they hold thresholds, else
    the config's ``topk`` with ``k`` (later circuit-tracer releases' TopK PLTs), else ReLU."""
    declared = config.get("activation")
    if shape.thresholds:
        if declared not in (None, "jump_relu", "jumprelu", "JumpReLU"):
            raise CheckpointError(
                f"{where}: says activation {declared!r}, but the files hold JumpReLU thresholds"
            )
        return Activation(source="JumpReLU", name="jump_relu")
    if isinstance(declared, str) and declared.lower() == "topk":
        k = config.get("k")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 < k <= shape.d_features:
            raise CheckpointError(f"{where}: activation topk needs k in 1..{shape.d_features}")
        return Activation(source="TopK", name="topk", k=k)
    if declared not in (None, "relu", "ReLU"):
        raise CheckpointError(
            f"{where}: activation {declared!r} is not one tracerflow runs on layer files "
            "(relu, jump_relu with thresholds, topk with k)"
        )
    return Activation(source="ReLU", name="relu")


def file_sha256(path: Path) -> str:
    """sha256 of a file; in the HF cache an LFS file is a symlink to a blob named by its sha256,
    which is used instead of re-reading it."""
    target = path.resolve().name
    if path.is_symlink() and len(target) == 64 and all(c in "0123456789abcdef" for c in target):
        return target
    return sha256_file(path)
