"""circuit-tracer's own transcoder folders, and ``tracerflow convert``'s output among them.

What circuit-tracer 0.5.0 itself loads: per-layer transcoders (PLT) as one ``layer_{i}.safetensors``
per layer (its ``load_transcoder_set``), cross-layer transcoders (CLT) as ``W_enc_{i}.safetensors``
and ``W_dec_{i}.safetensors`` (its ``load_clt``); with or without its ``config.yaml``
(``model_kind``, ``feature_input_hook``, ``feature_output_hook``, ``activation``, ``k``,
``model_name``), and with ``tracerflow.json`` where ``convert`` wrote the folder. The files are
already circuit-tracer's, so converting one is a verified copy. Where tracerflow's activation
differs from circuit-tracer's (TopK): docs/checkpoints.md. Detecting, describing and checking a
folder read only names, the config and safetensors headers (no torch).
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tracerflow.errors import CheckpointError
from tracerflow.fsutil import sha256_file
from tracerflow.transcoders.checkpoint import (
    MAX_CONFIG_BYTES,
    Activation,
    Kind,
    TranscoderShape,
)
from tracerflow.transcoders.formats.base import (
    SourceFormat,
    check_float_tensor,
    read_safetensors_header,
)
from tracerflow.transcoders.manifest import MANIFEST_FILE, read_manifest

if TYPE_CHECKING:
    import torch

TITLE = "circuit-tracer transcoder folder"
CONFIG_FILE = "config.yaml"
FILE_PATTERNS = ("layer_*.safetensors", "W_enc_*.safetensors", "W_dec_*.safetensors")
# Only the names circuit-tracer builds itself (f"layer_{i}.safetensors"): no leading zeros.
_TENSOR_FILE = re.compile(r"^(layer|W_enc|W_dec)_(0|[1-9][0-9]*)\.safetensors$")
_MODEL_KINDS: dict[str, Kind] = {"transcoder_set": "plt", "cross_layer_transcoder": "clt"}
_CONFIG_KEYS = {"model_kind", "feature_input_hook", "feature_output_hook", "activation", "k"}
_CONFIG_KEYS |= {"model_name", "transcoders"}
_HOOK = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
DEFAULT_HOOKS = ("hook_resid_mid", "hook_mlp_out")  # load_clt's defaults, what convert writes
_INT_DTYPES = {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"}
# What each file holds: (name, shape in terms of F, d, L-i; optional). `k` is the TopK size
# circuit-tracer's later releases write into PLT files; 0.5.0's loader refuses it, so the copy
# drops it (the manifest keeps k).
_PLT_TENSORS = (
    ("W_enc", ("F", "d"), False),
    ("W_dec", ("F", "d"), False),
    ("b_enc", ("F",), False),
    ("b_dec", ("d",), False),
    ("activation_function.threshold", ("F",), True),
    ("W_skip", ("d", "d"), True),
    ("k", (), True),
)
_DROPPED = frozenset({"k"})


@dataclass(frozen=True)
class CircuitTracerFolder(TranscoderShape):
    """A checked circuit-tracer folder: its shape, activation and hooks, and the files that hold
    it; ``write_files`` copies those files into a converted folder, verified."""

    path: Path
    is_folded: bool | None  # the manifest's source_was_folded; None: nothing was folded
    feature_input_hook: str
    feature_output_hook: str
    model_name: str | None
    tensor_files: tuple[str, ...]  # the safetensors files, in circuit-tracer's load order
    metadata_files: tuple[str, ...]  # config.yaml and tracerflow.json, where there
    tensor_dtype: str
    skip_connection: bool
    manifest_content_hash: str | None  # the identity convert recorded, where tracerflow wrote it

    @property
    def files(self) -> tuple[str, ...]:
        return self.tensor_files + self.metadata_files

    @cached_property
    def _hashes(self) -> dict[str, str]:
        return {name: sha256_file(self.path / name) for name in self.files}

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each file of the folder (the content identity of the transcoder)."""
        return dict(self._hashes)

    def write_files(self, out_dir: Path, dtype: torch.dtype) -> None:
        """Copy every tensor file into ``out_dir``: as is when it holds only ``dtype`` tensors
        (then the copy's sha256 must be the source's), else rewritten in ``dtype``; tensors that
        circuit-tracer 0.5.0 would refuse (``k``) are left out. Every tensor must be finite."""
        import torch
        from safetensors import safe_open
        from safetensors.torch import save_file

        for name in self.tensor_files:
            source = self.path / name
            with safe_open(str(source), framework="pt", device="cpu") as handle:
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118
            for key, tensor in tensors.items():
                if tensor.is_floating_point() and not torch.isfinite(tensor).all():
                    raise CheckpointError(
                        f"{source}: tensor '{key}' has non-finite values (NaN or inf)"
                    )
            kept = {key: tensor for key, tensor in tensors.items() if key not in _DROPPED}
            if len(kept) == len(tensors) and all(t.dtype == dtype for t in kept.values()):
                shutil.copyfile(source, out_dir / name)
                if sha256_file(out_dir / name) != self._hashes[name]:
                    raise CheckpointError(f"{source}: changed while it was copied; run again")
            else:
                save_file({k: t.to(dtype).contiguous() for k, t in kept.items()}, out_dir / name)


# --- the folder's files ----------------------------------------------------------------------


def _tensor_files(folder: Path) -> dict[str, dict[int, str]]:
    """``layer``, ``W_enc`` and ``W_dec`` files by layer index, from one listing."""
    found: dict[str, dict[int, str]] = {"layer": {}, "W_enc": {}, "W_dec": {}}
    if folder.is_dir():
        for path in folder.iterdir():
            match = _TENSOR_FILE.match(path.name)
            if match and path.is_file():
                found[match.group(1)][int(match.group(2))] = path.name
    return found


def _expected_names(kind: Kind, n_layers: int) -> tuple[str, ...]:
    if kind == "plt":
        return tuple(f"layer_{i}.safetensors" for i in range(n_layers))
    pairs = ((f"W_enc_{i}.safetensors", f"W_dec_{i}.safetensors") for i in range(n_layers))
    return tuple(name for pair in pairs for name in pair)


def _kind_and_layers(folder: Path) -> tuple[Kind, int] | None:
    """(kind, n_layers) from the files alone: the highest index names the layer count; None
    when the folder holds no tensor file of either kind."""
    found = _tensor_files(folder)
    clt = {**found["W_enc"], **found["W_dec"]}
    if clt:
        return "clt", max(clt) + 1
    if found["layer"]:
        return "plt", max(found["layer"]) + 1
    return None


def files(folder: Path) -> tuple[str, ...]:
    """The tensor files a folder of its kind and layer count must hold (some may be missing:
    the door names them), then its config and manifest where there."""
    kind_layers = _kind_and_layers(folder)
    if (folder / MANIFEST_FILE).is_file():
        try:
            manifest = read_manifest(folder)
            kind_layers = (manifest.kind, manifest.n_layers)
        except CheckpointError:
            pass  # check() names what is wrong with it
    names = _expected_names(*kind_layers) if kind_layers else ()
    return names + tuple(name for name in (CONFIG_FILE, MANIFEST_FILE) if (folder / name).is_file())


def read_config(folder: Path) -> dict[str, Any] | None:
    """circuit-tracer's ``config.yaml``: a mapping with at least one of its keys; None when the
    folder has none, or its config.yaml is another library's (a crosslayer-transcoder one)."""
    from tracerflow.transcoders.checkpoint import _NoAliasLoader

    path = folder / CONFIG_FILE
    if not path.is_file():
        return None
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size} bytes; too large for a config")
    try:
        config = yaml.load(path.read_bytes().decode("utf-8"), Loader=_NoAliasLoader)
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        problem = " ".join(str(error).split())
        raise CheckpointError(f"{path}: not valid YAML ({problem})") from None
    if not isinstance(config, dict) or not _CONFIG_KEYS & set(config):
        return None
    return config


def detect(folder: Path) -> float:
    """Certain when the folder holds circuit-tracer's tensor files or a tracerflow manifest;
    likely (0.75) when it holds only circuit-tracer's config.yaml, so that its missing files
    are named; 0.5 when its config lists the files under ``transcoders`` (a Hub config, read as
    ``hub_config``, even beside layer files: circuit-tracer reads the list then); 0 otherwise."""
    try:
        config = read_config(folder)
    except CheckpointError:
        config = None
    if config is not None and "transcoders" in config:
        return 0.5
    if _kind_and_layers(folder) is not None or (folder / MANIFEST_FILE).is_file():
        return 1.0
    return 0.75 if config is not None else 0.0


# --- checking a folder -----------------------------------------------------------------------


def read_folder(folder: str | Path) -> CircuitTracerFolder:
    """Check a circuit-tracer folder from its names, config, manifest and safetensors headers
    (no weights, no torch) and describe it; ``CheckpointError`` naming the file and what is wrong:
    a missing layer, both kinds of files, a tensor missing, extra or of another shape, layers that
    disagree, a config or manifest that contradicts the files."""
    folder = Path(folder).expanduser()
    config = read_config(folder) or {}
    config_path = folder / CONFIG_FILE
    if "transcoders" in config:
        raise CheckpointError(
            f"{config_path}: lists its files under 'transcoders' (a circuit-tracer Hub config, "
            "read as that format, not as a folder of circuit-tracer files)"
        )
    manifest = read_manifest(folder) if (folder / MANIFEST_FILE).is_file() else None
    found = _tensor_files(folder)
    if found["layer"] and (found["W_enc"] or found["W_dec"]):
        raise CheckpointError(
            f"{folder}: holds both per-layer files (layer_{{i}}.safetensors) and cross-layer "
            "files (W_enc_{i}/W_dec_{i}.safetensors); keep one transcoder per folder"
        )
    kind_layers = _kind_and_layers(folder)
    if kind_layers is None:
        raise CheckpointError(
            f"{folder}: no layer_{{i}}.safetensors or W_enc_{{i}}/W_dec_{{i}}.safetensors files"
        )
    kind, n_layers = kind_layers
    if manifest is not None and (manifest.kind, manifest.n_layers) != kind_layers:
        raise CheckpointError(
            f"{folder / MANIFEST_FILE}: says a {manifest.n_layers}-layer {manifest.kind}, but the "
            f"folder holds the files of a {n_layers}-layer {kind}"
        )
    model_kind = config.get("model_kind")
    if model_kind is not None and _MODEL_KINDS.get(model_kind) != kind:
        raise CheckpointError(
            f"{config_path}: model_kind is {model_kind!r}, but the folder holds the files of a "
            f"{'cross_layer_transcoder' if kind == 'clt' else 'transcoder_set'}"
        )
    names = _expected_names(kind, n_layers)
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{folder}: no {missing[0]}"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            + f"; a {n_layers}-layer {kind.upper()} needs every layer's file"
        )
    headers = {name: read_safetensors_header(folder / name) for name in names}
    shape = _check_headers(folder, kind, n_layers, headers)
    activation = _activation(folder, config, manifest, shape)
    hooks = config_hooks(config_path, config, manifest)
    model_name = config.get("model_name")
    return CircuitTracerFolder(
        path=folder,
        kind=kind,
        n_layers=n_layers,
        d_model=shape.d_model,
        d_features=shape.d_features,
        activation=activation,
        is_folded=manifest.source_was_folded if manifest else None,
        feature_input_hook=hooks[0],
        feature_output_hook=hooks[1],
        model_name=model_name if isinstance(model_name, str) else None,
        tensor_files=names,
        metadata_files=tuple(n for n in (CONFIG_FILE, MANIFEST_FILE) if (folder / n).is_file()),
        tensor_dtype=shape.dtype,
        skip_connection=shape.skip,
        manifest_content_hash=manifest.content_hash if manifest else None,
    )


@dataclass(frozen=True)
class _Shape:
    d_model: int
    d_features: int
    dtype: str
    thresholds: bool  # JumpReLU thresholds in every layer
    skip: bool  # W_skip in every layer (PLTs)
    k_values: tuple[int, ...]  # the `k` tensors' values, one per layer, where written


def _check_headers(
    folder: Path, kind: Kind, n_layers: int, headers: dict[str, dict[str, Any]]
) -> _Shape:
    """Every tensor named, shaped and typed as circuit-tracer's loaders read it, the same
    ``d_model`` and feature count in every layer, optional tensors in all layers or none."""
    first = headers[_expected_names(kind, n_layers)[0]]
    if kind == "plt":
        d_features, d_model = _dims(folder / "layer_0.safetensors", first, "W_enc")
    else:
        d_features, d_model = _dims(folder / "W_enc_0.safetensors", first, "W_enc_0")
    sizes = {"F": d_features, "d": d_model}
    present: dict[str, set[int]] = {}
    dtypes: set[str] = set()
    k_values = []
    for layer in range(n_layers):
        if kind == "plt":
            files_tensors = {f"layer_{layer}.safetensors": _PLT_TENSORS}
        else:
            files_tensors = {
                f"W_enc_{layer}.safetensors": (
                    (f"W_enc_{layer}", ("F", "d"), False),
                    (f"b_enc_{layer}", ("F",), False),
                    (f"b_dec_{layer}", ("d",), False),
                    (f"threshold_{layer}", ("F",), True),
                ),
                f"W_dec_{layer}.safetensors": ((f"W_dec_{layer}", ("F", "L-i", "d"), False),),
            }
        for name, expected in files_tensors.items():
            path = folder / name
            entries = {key: value for key, value in headers[name].items() if key != "__metadata__"}
            known = {key for key, _, _ in expected}
            extra = sorted(set(entries) - known)
            if extra:
                raise CheckpointError(
                    f"{path}: unexpected tensor '{extra[0]}' (circuit-tracer's files hold "
                    f"{', '.join(sorted(known))})"
                )
            for key, dims, optional in expected:
                if key not in entries:
                    if optional:
                        continue
                    raise CheckpointError(f"{path}: missing tensor '{key}'")
                present.setdefault(key.rstrip("0123456789").rstrip("_"), set()).add(layer)
                info = entries[key]
                if key == "k":
                    k_values.append(_int_scalar(path, info))
                    continue
                want = [n_layers - layer if dim == "L-i" else sizes[dim] for dim in dims]
                dtypes.add(check_float_tensor(str(path), key, info, want, "layer 0"))
    for optional in ("activation_function.threshold", "threshold", "W_skip", "k"):
        layers = present.get(optional, set())
        if layers and len(layers) != n_layers:
            missing = min(set(range(n_layers)) - layers)
            raise CheckpointError(
                f"{folder}: layer {missing} has no '{optional}' tensor but layer {min(layers)} "
                "has one; circuit-tracer needs it in every layer or none"
            )
    thresholds = bool(present.get("activation_function.threshold") or present.get("threshold"))
    dtype = "float32" if "float32" in dtypes else min(dtypes)
    skip = bool(present.get("W_skip"))
    return _Shape(d_model, d_features, dtype, thresholds, skip, tuple(k_values))


def _dims(path: Path, header: dict[str, Any], key: str) -> tuple[int, int]:
    shape = header.get(key, {}).get("shape") if isinstance(header.get(key), dict) else None
    if not shape or len(shape) != 2 or min(shape) < 1:
        raise CheckpointError(f"{path}: tensor '{key}' missing or not [d_features, d_model]")
    return int(shape[0]), int(shape[1])


def _int_scalar(path: Path, info: dict[str, Any]) -> int:
    """The value of a one-element integer tensor, read from the file's bytes (no torch)."""
    if info.get("dtype") not in _INT_DTYPES or len(info.get("shape", [])) > 1:
        raise CheckpointError(f"{path}: tensor 'k' must be one integer")
    start, end = info["data_offsets"]
    with path.open("rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        handle.seek(8 + header_size + start)
        data = handle.read(end - start)
    return int.from_bytes(data, "little", signed=info["dtype"].startswith("I"))


def _activation(folder: Path, config: dict[str, Any], manifest: Any, shape: _Shape) -> Activation:
    """The activation a run applies: the manifest's (``convert`` recorded it), else the config's
    ``activation`` (``topk`` with ``k``, ``relu``, ``jump_relu``), else what the tensors say
    (``k`` tensors: TopK; thresholds: JumpReLU; else ReLU), which is what circuit-tracer 0.5.0
    picks. Each must agree with the tensors."""
    where = folder / CONFIG_FILE
    if manifest is not None:
        spec = manifest.activation
        activation = Activation(source=spec.source, name=spec.name, k=spec.k)
        where = folder / MANIFEST_FILE
    else:
        declared = config.get("activation")
        if declared is None and shape.k_values:
            declared = "topk"
        if declared is None:
            declared = "jump_relu" if shape.thresholds else "relu"
        if not isinstance(declared, str) or declared.lower() not in (
            "topk",
            "relu",
            "jump_relu",
            "jumprelu",
        ):
            raise CheckpointError(
                f"{where}: activation {declared!r} is not one tracerflow runs "
                "(topk with k, relu, jump_relu)"
            )
        name = {"jumprelu": "jump_relu"}.get(declared.lower(), declared.lower())
        k = None
        if name == "topk":
            k = _topk_size(where, config.get("k"), shape)
        source = {"topk": "TopK", "relu": "ReLU", "jump_relu": "JumpReLU"}[name]
        activation = Activation(source=source, name=name, k=k)  # type: ignore[arg-type]
    if (activation.name == "jump_relu") != shape.thresholds:
        has = "hold JumpReLU thresholds" if shape.thresholds else "hold no JumpReLU thresholds"
        raise CheckpointError(f"{where}: says activation {activation.name}, but the files {has}")
    if activation.k is not None and activation.k > shape.d_features:
        raise CheckpointError(
            f"{where}: k is {activation.k}, more than the {shape.d_features} features per layer"
        )
    return activation


def _topk_size(where: Path, k: Any, shape: _Shape) -> int:
    if k is None and shape.k_values:
        k = shape.k_values[0]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise CheckpointError(f"{where}: activation topk needs a positive integer k, got {k!r}")
    if any(value != k for value in shape.k_values):
        raise CheckpointError(
            f"{where}: k is {k}, but the layer files' k tensors say {sorted(set(shape.k_values))}"
        )
    return k


def config_hooks(config_path: Path, config: dict[str, Any], manifest: Any) -> tuple[str, str]:
    if manifest is not None:
        return manifest.feature_input_hook, manifest.feature_output_hook
    hooks = []
    keys = ("feature_input_hook", "feature_output_hook")
    for key, default in zip(keys, DEFAULT_HOOKS, strict=True):
        hook = config.get(key, default)
        if not isinstance(hook, str) or not _HOOK.match(hook):
            raise CheckpointError(f"{config_path}: '{key}' must be a hook name, got {hook!r}")
        hooks.append(hook)
    return hooks[0], hooks[1]


# --- what the registry asks ------------------------------------------------------------------


def check(folder: Path) -> None:
    """The whole check short of the weights (names, config, manifest, headers); no torch."""
    read_folder(folder)


def dimensions(folder: Path) -> tuple[int, int]:
    checked = read_folder(folder)
    return checked.n_layers, checked.d_model


def describe(folder: Path) -> dict[str, Any]:
    """Kind, layers, features, activation, hooks, dtype and sizes; for ``convert``'s output also
    what the manifest records of its source (its folding and content hash)."""
    checked = read_folder(folder)
    sizes = [(folder / name).stat().st_size for name in checked.tensor_files]
    converted = (folder / MANIFEST_FILE).is_file()
    fields: dict[str, Any] = {
        "path": str(folder),
        "format": f"{TITLE} (converted by tracerflow)" if converted else TITLE,
        "kind": checked.kind,
        "n_layers": checked.n_layers,
        "d_model": checked.d_model,
        "d_features": checked.d_features,
        "activation": checked.activation.name,
        "k": checked.activation.k,
        "source_activation": checked.activation.source,
        "feature_input_hook": checked.feature_input_hook,
        "feature_output_hook": checked.feature_output_hook,
        "skip_connection": checked.skip_connection,
    }
    if converted:
        fields["source_was_folded"] = checked.is_folded
    else:
        fields["config"] = CONFIG_FILE if CONFIG_FILE in checked.metadata_files else None
        fields["model_name"] = checked.model_name
    fields |= {
        "dtype": checked.tensor_dtype,
        "files": len(sizes),
        "size_bytes": sum(sizes),
        "largest_file_bytes": max(sizes),
    }
    if converted:  # the identity of the checkpoint it was converted from; its own is its files'
        fields["source_content_hash"] = checked.manifest_content_hash
    return fields


FORMAT = SourceFormat(
    name="circuit-tracer",
    title=TITLE,
    file_patterns=(*FILE_PATTERNS, CONFIG_FILE, MANIFEST_FILE),
    detect=detect,
    describe=describe,
    files=files,
    check=check,
    read=read_folder,
    dimensions=dimensions,
)
