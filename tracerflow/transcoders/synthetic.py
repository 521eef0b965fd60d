"""Write checkpoints in the crosslayer-transcoder format: for the toy preset, benchmarks and tests.

``write_checkpoint`` lays out ``config.yaml`` + ``checkpoint.safetensors`` exactly as the Hub
checkpoints are laid out (see ``checkpoint.py`` for the tensor names), so whatever tracerflow
writes goes through the same read/convert path as a downloaded transcoder.
``random_checkpoint`` fills one with seeded random weights of a chosen shape.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from safetensors.torch import save_file

from tracerflow.fsutil import atomic_directory
from tracerflow.transcoders.checkpoint import CONFIG_FILE, WEIGHTS_FILE

_PKG = "crosslayer_transcoder.model"
NONLINEARITY_CLASS_PATHS = {
    "PerLayerTopK": f"{_PKG}.topk.PerLayerTopK",
    "BatchTopK": f"{_PKG}.topk.BatchTopK",
    "PerLayerBatchTopK": f"{_PKG}.topk.PerLayerBatchTopK",
    "JumpReLU": f"{_PKG}.jumprelu.JumpReLU",
    "ReLU": f"{_PKG}.jumprelu.ReLU",
}
StandardizerKind = Literal["dimensionwise", "layerwise"] | None


def _nonlinearity_init_args(
    nonlinearity: str, n_layers: int, d_features: int, overrides: dict[str, Any]
) -> dict[str, Any]:
    """The init_args the library's ``to_config`` writes for each nonlinearity: every TopK class
    writes ``k``, ``e`` and ``n_layers`` (null unless given), JumpReLU its initial scalar
    ``theta``, ``bandwidth``, ``n_layers`` and ``d_features``, ReLU nothing."""
    if nonlinearity in ("PerLayerTopK", "BatchTopK", "PerLayerBatchTopK"):
        defaults: dict[str, Any] = {"e": None, "k": None, "n_layers": None}
    elif nonlinearity == "JumpReLU":
        defaults = {"theta": 0.0, "bandwidth": 1.0, "n_layers": n_layers, "d_features": d_features}
    else:
        defaults = {}
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ValueError(f"{nonlinearity} takes no init_args {sorted(unknown)}")
    return {**defaults, **overrides}


def _standardizer_node(
    kind: StandardizerKind, side: str, n_layers: int, d_model: int
) -> dict[str, Any]:
    """An unfolded standardizer as the library's ``from_pretrained`` builds it: the class and
    its constructor arguments (``DimensionwiseInputStandardizer(n_layers, activation_dim)``,
    ``LayerwiseInputStandardizer(n_layers)``)."""
    name = {"dimensionwise": "Dimensionwise", "layerwise": "Layerwise"}[kind]
    args: dict[str, Any] = {"n_layers": n_layers}
    if kind == "dimensionwise":
        args["activation_dim"] = d_model
    return {"class_path": f"{_PKG}.standardize.{name}{side}Standardizer", "init_args": args}


def checkpoint_config(
    *,
    kind: Literal["clt", "plt"],
    n_layers: int,
    d_model: int,
    d_features: int,
    nonlinearity: str,
    nonlinearity_args: dict[str, Any] | None = None,
    standardizer: StandardizerKind = None,
    is_folded: bool = True,
) -> dict[str, Any]:
    """The ``config.yaml`` tree of a crosslayer-transcoder checkpoint, key for key what the
    library's ``save_pretrained`` writes: ``{"model": to_config() + {"is_folded": ...}}``.

    Without ``standardizer`` the standardizers are null, as in every folded (published)
    checkpoint. With one the checkpoint is unfolded and its standardizers are
    ``class_path``/``init_args`` nodes: the library's own standardizers have no ``to_config``,
    so its ``save_pretrained`` cannot write them, but its ``from_pretrained`` builds exactly these.
    """
    if standardizer is not None and is_folded:
        raise ValueError("a folded checkpoint has no standardizers")
    dims = {"d_acts": d_model, "d_features": d_features, "n_layers": n_layers}
    decoder = "CrosslayerDecoder" if kind == "clt" else "Decoder"
    nonlinearity_node = {
        "class_path": NONLINEARITY_CLASS_PATHS[nonlinearity],
        "init_args": _nonlinearity_init_args(
            nonlinearity, n_layers, d_features, nonlinearity_args or {}
        ),
    }
    return {
        "model": {
            "class_path": f"{_PKG}.clt.CrossLayerTranscoder",
            "init_args": {
                "decoder": {"class_path": f"{_PKG}.clt.{decoder}", "init_args": dict(dims)},
                "encoder": {"class_path": f"{_PKG}.clt.Encoder", "init_args": dict(dims)},
                "input_standardizer": None
                if standardizer is None
                else _standardizer_node(standardizer, "Input", n_layers, d_model),
                "nonlinearity": nonlinearity_node,
                "output_standardizer": None
                if standardizer is None
                else _standardizer_node(standardizer, "Output", n_layers, d_model),
            },
            "is_folded": is_folded,
        },
    }


def config_yaml(config: dict[str, Any]) -> str:
    """YAML text as the library writes it (``yaml.dump``: block style, keys sorted)."""
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False)


def write_checkpoint(
    folder: str | Path, config: dict[str, Any], tensors: dict[str, torch.Tensor]
) -> Path:
    """Write ``config.yaml`` and ``checkpoint.safetensors`` into ``folder`` (atomically)."""
    folder = Path(folder)
    with atomic_directory(folder, overwrite=True) as tmp_dir:
        (tmp_dir / CONFIG_FILE).write_text(config_yaml(config))
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp_dir / WEIGHTS_FILE)
    return folder


def random_tensors(
    *,
    kind: Literal["clt", "plt"],
    n_layers: int,
    d_model: int,
    d_features: int,
    nonlinearity: str,
    standardizer: StandardizerKind = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """Seeded random weights with the checkpoint's tensor names and shapes.

    The encoder is scaled so that pre-activations of unit-variance inputs have unit variance;
    biases are slightly negative so that ReLU/JumpReLU transcoders are sparse too.
    """
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    tensors = {
        "encoder.W": randn(n_layers, d_model, d_features, scale=d_model**-0.5),
        "encoder.b": randn(n_layers, d_features, scale=0.1) - 0.5,
    }
    decoder_scale = d_features**-0.5
    if kind == "clt":
        for target in range(n_layers):
            tensors[f"decoder.W_{target}"] = randn(
                target + 1, d_features, d_model, scale=decoder_scale
            )
    else:
        tensors["decoder.W"] = randn(n_layers, d_features, d_model, scale=decoder_scale)
    tensors["decoder.b"] = randn(n_layers, d_model, scale=0.05)
    if nonlinearity == "JumpReLU":
        # Mixed signs on purpose: crosslayer-transcoder keeps x only where x > θ AND x > 0.
        tensors["nonlinearity.theta"] = randn(1, n_layers, d_features, scale=0.5)
        tensors["nonlinearity.bandwidth"] = torch.tensor(1.0)
    elif nonlinearity == "BatchTopK":
        tensors["nonlinearity.threshold"] = torch.tensor([0.3])
    elif nonlinearity == "PerLayerBatchTopK":
        tensors["nonlinearity.threshold"] = torch.linspace(-0.2, 0.6, n_layers)
    if standardizer is not None:
        shape = (n_layers, d_model) if standardizer == "dimensionwise" else (n_layers,)
        for prefix in ("input_standardizer", "output_standardizer"):
            tensors[f"{prefix}.mean"] = randn(*shape, scale=0.5)
            tensors[f"{prefix}.std"] = torch.rand(*shape, generator=generator) * 2 + 0.25
    return tensors


def random_checkpoint(
    folder: str | Path,
    *,
    kind: Literal["clt", "plt"] = "clt",
    n_layers: int = 2,
    d_model: int = 16,
    d_features: int = 32,
    nonlinearity: str = "PerLayerTopK",
    k: int = 4,
    standardizer: StandardizerKind = None,
    seed: int = 0,
) -> Path:
    """A seeded random checkpoint; with ``standardizer`` set it is written unfolded."""
    nonlinearity_args: dict[str, Any] = {}
    if nonlinearity in ("PerLayerTopK", "BatchTopK", "PerLayerBatchTopK"):
        nonlinearity_args["k"] = k
    if nonlinearity == "PerLayerBatchTopK":  # its threshold buffer has one entry per layer
        nonlinearity_args["n_layers"] = n_layers
    config = checkpoint_config(
        kind=kind,
        n_layers=n_layers,
        d_model=d_model,
        d_features=d_features,
        nonlinearity=nonlinearity,
        nonlinearity_args=nonlinearity_args,
        standardizer=standardizer,
        is_folded=standardizer is None,
    )
    tensors = random_tensors(
        kind=kind,
        n_layers=n_layers,
        d_model=d_model,
        d_features=d_features,
        nonlinearity=nonlinearity,
        standardizer=standardizer,
        seed=seed,
    )
    return write_checkpoint(folder, config, tensors)
