"""Read crosslayer-transcoder checkpoints as data, never as code.

Each ``class_path`` of ``config.yaml`` is matched against a fixed table of known classes (never
imported), and the tensors we expect are read one by one through ``safe_open`` (memory-mapped), so
a 4.4 GB checkpoint is never held twice. The format and tensor layout: docs/checkpoints.md.
torch is imported only where tensors are read, so that the format registry
(``tracerflow.transcoders.formats``) can name this format's files and detect it without torch.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import yaml
from safetensors import safe_open

from tracerflow.errors import CheckpointError
from tracerflow.fsutil import sha256_file

if TYPE_CHECKING:
    import torch

CONFIG_FILE = "config.yaml"
WEIGHTS_FILE = "checkpoint.safetensors"

Kind = Literal["clt", "plt"]
ActivationName = Literal["topk", "jump_relu", "relu"]

_PKG = "crosslayer_transcoder.model"

# The Lightning wrappers that may sit at the top of `model:`; the transcoder is `init_args.model`.
_WRAPPER_CLASSES = {
    f"{_PKG}.clt_lightning.{name}"
    for name in (
        "CrossLayerTranscoderModule",
        "TopKCrossLayerTranscoderModule",
        "JumpReLUCrossLayerTranscoderModule",
        "BatchTopKCrossLayerTranscoderModule",
    )
}
_MODEL_CLASSES = {f"{_PKG}.clt.CrossLayerTranscoder", f"{_PKG}.CrossLayerTranscoder"}
_ENCODER_CLASSES = {f"{_PKG}.clt.Encoder"}
_DECODER_CLASSES: dict[str, Kind] = {
    f"{_PKG}.clt.CrosslayerDecoder": "clt",
    f"{_PKG}.clt.Decoder": "plt",
}
_NONLINEARITY_CLASSES = {
    f"{_PKG}.topk.PerLayerTopK": "PerLayerTopK",
    f"{_PKG}.PerLayerTopK": "PerLayerTopK",
    f"{_PKG}.topk.BatchTopK": "BatchTopK",
    f"{_PKG}.BatchTopK": "BatchTopK",
    f"{_PKG}.topk.PerLayerBatchTopK": "PerLayerBatchTopK",
    f"{_PKG}.PerLayerBatchTopK": "PerLayerBatchTopK",
    f"{_PKG}.jumprelu.JumpReLU": "JumpReLU",
    f"{_PKG}.jumprelu.ReLU": "ReLU",
    "torch.nn.ReLU": "ReLU",
    "torch.nn.modules.activation.ReLU": "ReLU",
}
# Standardizers we can fold exactly: (x - mean) / std is affine per layer (and per dimension).
_STANDARDIZER_CLASSES = {
    f"{_PKG}.standardize.Standardizer": "identity",
    f"{_PKG}.standardize.DimensionwiseInputStandardizer": "dimensionwise",
    f"{_PKG}.standardize.DimensionwiseOutputStandardizer": "dimensionwise",
    f"{_PKG}.standardize.LayerwiseInputStandardizer": "layerwise",
    f"{_PKG}.standardize.LayerwiseOutputStandardizer": "layerwise",
}
_UNFOLDABLE_STANDARDIZERS = {
    f"{_PKG}.standardize.SamplewiseInputStandardizer": (
        "it normalises each sample by its own statistics, which is not an affine map that can "
        "be folded into the encoder"
    ),
}


@dataclass(frozen=True)
class Activation:
    """The inference-time nonlinearity, as circuit-tracer files will express it.

    ``source`` is the crosslayer-transcoder class name; ``name`` what we run: ``topk`` (exact
    PerLayerTopK), ``jump_relu`` (thresholds, already ``max(θ, 0)``) or ``relu``.
    """

    source: str
    name: ActivationName
    k: int | None = None

    def describe(self) -> str:
        return f"{self.source} (k={self.k})" if self.k is not None else self.source


@dataclass(frozen=True)
class Standardizer:
    """How a standardizer is stored: ``identity`` (nothing), ``dimensionwise`` ([L, d]) or
    ``layerwise`` ([L]) mean and std."""

    kind: str

    @property
    def has_tensors(self) -> bool:
        return self.kind != "identity"


@dataclass(frozen=True)
class TranscoderShape:
    """What every format's reader knows of a transcoder before reading its weights."""

    kind: Kind
    n_layers: int
    d_model: int
    d_features: int
    activation: Activation


@dataclass(frozen=True)
class TranscoderConfig(TranscoderShape):
    """What a checkpoint's ``model:`` tree says: the fields of ``Checkpoint`` a config gives."""

    is_folded: bool
    input_standardizer: Standardizer
    output_standardizer: Standardizer


@dataclass(frozen=True)
class Checkpoint(TranscoderConfig):
    """A validated crosslayer-transcoder checkpoint; tensors are read on demand.

    ``files`` are the files of ``path`` that make up the checkpoint (their hashes are its
    identity); the tensors come from ``weights_file`` through ``safe_open``, or from ``tensors``
    when a reader already holds them (a Lightning ``clt.ckpt``, loaded by torch's safe loader).
    """

    # Where circuit-tracer reads the features from and writes them to (blocks.{l}.<hook>).
    feature_input_hook: ClassVar[str] = "hook_resid_mid"
    feature_output_hook: ClassVar[str] = "hook_mlp_out"

    path: Path
    tensor_shapes: dict[str, tuple[int, ...]] = field(repr=False)
    tensor_dtype: str = "float32"
    files: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)
    weights_file: str = WEIGHTS_FILE
    tensors: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def weights_path(self) -> Path:
        return self.path / self.weights_file

    def file_hashes(self) -> dict[str, str]:
        """sha256 of each file of the checkpoint (the content identity of the transcoder)."""
        return {name: sha256_file(self.path / name) for name in self.files}

    def size_bytes(self) -> int:
        return self.weights_path.stat().st_size

    @contextmanager
    def open_tensors(self) -> Iterator[TensorReader]:
        """Open the weights (memory-mapped); read per layer through the returned reader."""
        if self.tensors is not None:
            yield TensorReader(self, _HeldTensors(self.tensors))
            return
        try:
            with safe_open(str(self.weights_path), framework="pt", device="cpu") as handle:
                yield TensorReader(self, handle)
        except CheckpointError:
            raise
        except Exception as error:  # safetensors raises its own, untyped, errors
            raise CheckpointError(
                f"{self.weights_path}: cannot read tensors ({type(error).__name__}: {error})"
            ) from error

    def write_files(self, out_dir: Path, dtype: torch.dtype) -> None:
        """circuit-tracer's files of this transcoder, one layer at a time (docs/checkpoints.md):
        CLTs in the layout of its ``load_clt``, PLTs in that of ``load_transcoder_set``."""
        from safetensors.torch import save_file

        with self.open_tensors() as reader:
            for layer in range(self.n_layers):
                w_enc, b_enc = reader.encoder_layer(layer, dtype)
                thresholds = reader.thresholds(layer, dtype)
                if self.kind == "clt":
                    encoder_file = {
                        f"W_enc_{layer}": w_enc,
                        f"b_enc_{layer}": b_enc,
                        f"b_dec_{layer}": reader.decoder_bias(layer, dtype),
                    }
                    if thresholds is not None:
                        encoder_file[f"threshold_{layer}"] = thresholds
                    save_file(encoder_file, out_dir / f"W_enc_{layer}.safetensors")
                    del encoder_file, w_enc, b_enc
                    decoder = reader.clt_decoder_from(layer, dtype)
                    save_file({f"W_dec_{layer}": decoder}, out_dir / f"W_dec_{layer}.safetensors")
                    del decoder
                    continue
                layer_file = {
                    "W_enc": w_enc,
                    "W_dec": reader.plt_decoder(layer, dtype),
                    "b_enc": b_enc,
                    "b_dec": reader.decoder_bias(layer, dtype),
                }
                if thresholds is not None:
                    layer_file["activation_function.threshold"] = thresholds
                save_file(layer_file, out_dir / f"layer_{layer}.safetensors")


class _HeldTensors:
    """Tensors already in memory, read through ``safe_open``'s two calls."""

    def __init__(self, tensors: Mapping[str, Any]) -> None:
        self._tensors = tensors

    def get_tensor(self, key: str) -> Any:
        return self._tensors[key]

    def get_slice(self, key: str) -> Any:
        return self._tensors[key]


class TensorReader:
    """Per-layer reads of a checkpoint's tensors, with standardizers folded in exactly.

    Folding is computed in float64 and rounded once to the requested dtype:
      encoder  W' = W / σ_in,  b' = b − μ_in · W'
      decoder  W_t'[l] = W_t[l] · σ_out[t],  b'[t] = b[t] · σ_out[t] + μ_out[t]
    Each returned tensor is checked to be finite.
    """

    def __init__(self, checkpoint: Checkpoint, handle: Any) -> None:
        self.checkpoint = checkpoint
        self._handle = handle

    def _read(self, key: str, index: int | None = None) -> torch.Tensor:
        import torch

        try:
            tensor = (
                self._handle.get_tensor(key)
                if index is None
                else self._handle.get_slice(key)[index]
            )
        except Exception as error:
            raise CheckpointError(
                f"{self.checkpoint.weights_path}: cannot read tensor '{key}' "
                f"({type(error).__name__}: {error})"
            ) from error
        where = key if index is None else f"{key}[{index}]"
        if not torch.isfinite(tensor).all():
            raise CheckpointError(
                f"{self.checkpoint.weights_path}: tensor '{where}' has non-finite values "
                "(NaN or inf)"
            )
        return tensor.to(torch.float64)

    def _standardizer_layer(
        self, prefix: str, standardizer: Standardizer, layer: int
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(mean, std) of one layer, broadcastable against [d], or None when nothing to fold."""
        if self.checkpoint.is_folded or not standardizer.has_tensors:
            return None
        mean = self._read(f"{prefix}.mean", layer)
        std = self._read(f"{prefix}.std", layer)
        if (std == 0).any():
            raise CheckpointError(
                f"{self.checkpoint.weights_path}: tensor '{prefix}.std[{layer}]' has zeros; "
                "the standardizer cannot be folded"
            )
        return mean, std

    def encoder_layer(self, layer: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Folded encoder of one layer: ``W_enc [F, d]`` (circuit-tracer layout), ``b_enc [F]``."""
        weight = self._read("encoder.W", layer)  # [d, F]
        bias = self._read("encoder.b", layer)  # [F]
        stats = self._standardizer_layer(
            "input_standardizer", self.checkpoint.input_standardizer, layer
        )
        if stats is not None:
            mean, std = stats
            weight = weight / std.reshape(-1, 1)  # std is [d] or a scalar
            bias = bias - (mean.reshape(-1, 1) * weight).sum(dim=0)
        return weight.T.contiguous().to(dtype), bias.to(dtype)

    def _output_scale(self, target: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return self._standardizer_layer(
            "output_standardizer", self.checkpoint.output_standardizer, target
        )

    def decoder_bias(self, target: int, dtype: torch.dtype) -> torch.Tensor:
        """Folded decoder bias of one target layer, ``[d]`` (zeros for PLTs stored without one)."""
        import torch

        if "decoder.b" in self.checkpoint.tensor_shapes:
            bias = self._read("decoder.b", target)
        else:
            bias = torch.zeros(self.checkpoint.d_model, dtype=torch.float64)
        stats = self._output_scale(target)
        if stats is not None:
            mean, std = stats
            bias = bias * std + mean
        return bias.to(dtype)

    def clt_decoder_from(self, source: int, dtype: torch.dtype) -> torch.Tensor:
        """Folded decoders of one CLT source layer to every later layer: ``[F, L - source, d]``."""
        import torch

        n_layers = self.checkpoint.n_layers
        out = torch.empty(
            self.checkpoint.d_features, n_layers - source, self.checkpoint.d_model, dtype=dtype
        )
        for target in range(source, n_layers):
            weight = self._read(f"decoder.W_{target}", source)  # [F, d]
            stats = self._output_scale(target)
            if stats is not None:
                weight = weight * stats[1]
            out[:, target - source] = weight.to(dtype)
        return out

    def plt_decoder(self, layer: int, dtype: torch.dtype) -> torch.Tensor:
        """Folded decoder of one PLT layer: ``[F, d]``."""
        weight = self._read("decoder.W", layer)
        stats = self._output_scale(layer)
        if stats is not None:
            weight = weight * stats[1]
        return weight.to(dtype)

    def thresholds(self, layer: int, dtype: torch.dtype) -> torch.Tensor | None:
        """circuit-tracer JumpReLU thresholds of one layer, ``max(θ, 0)`` as ``[F]``; None when
        the activation has no thresholds (ReLU, TopK)."""
        source = self.checkpoint.activation.source
        n_features = self.checkpoint.d_features
        if source == "JumpReLU":
            theta = self._read("nonlinearity.theta").reshape(-1, n_features)[layer]
        elif source == "BatchTopK":
            theta = self._read("nonlinearity.threshold").reshape(-1)[0].expand(n_features)
        elif source == "PerLayerBatchTopK":
            theta = self._read("nonlinearity.threshold").reshape(-1)[layer].expand(n_features)
        else:
            return None
        return theta.clamp_min(0.0).to(dtype).contiguous()


# --- reading and validating the config ------------------------------------------------------


def _node(tree: Any, where: str, config_path: str | Path) -> tuple[str, dict[str, Any]]:
    """Split a ``{class_path, init_args}`` node, with a clear error when it is not one."""
    if not isinstance(tree, dict) or not isinstance(tree.get("class_path"), str):
        raise CheckpointError(f"{config_path}: '{where}' must be a mapping with a 'class_path'")
    init_args = tree.get("init_args") or {}
    if not isinstance(init_args, dict):
        raise CheckpointError(f"{config_path}: '{where}.init_args' must be a mapping")
    return tree["class_path"], init_args


def _known(table: Any, class_path: str, where: str, config_path: str | Path) -> Any:
    if class_path in _UNFOLDABLE_STANDARDIZERS:
        raise CheckpointError(
            f"{config_path}: '{where}' is {class_path}, which tracerflow does not support: "
            f"{_UNFOLDABLE_STANDARDIZERS[class_path]}"
        )
    if class_path not in table:
        known = ", ".join(sorted(table))
        raise CheckpointError(
            f"{config_path}: '{where}' names unknown class '{class_path}' (known: {known})"
        )
    return table[class_path] if isinstance(table, dict) else class_path


def _positive_int(value: Any, where: str, config_path: str | Path) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{config_path}: '{where}' must be a positive integer, got {value!r}")
    return value


# A checkpoint's config is a few KB; a larger file is not one (and is never read whole).
MAX_CONFIG_BYTES = 2**20


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without anchors and aliases: the library writes none, and aliases nested in each
    other ("billion laughs") expand to more than memory holds once walked."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases are not allowed here", event.start_mark
            )
        return super().compose_node(parent, index)


def load_config(path: Path) -> dict[str, Any]:
    """``path``'s ``config.yaml``, parsed safely (no aliases, at most ``MAX_CONFIG_BYTES``), with a
    top-level ``model:``; ``CheckpointError`` naming the file otherwise."""
    config_path = path / CONFIG_FILE
    if not path.is_dir():
        raise CheckpointError(f"{path}: checkpoint folder does not exist")
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing (a checkpoint folder needs {CONFIG_FILE})")
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(
            f"{config_path}: {config_path.stat().st_size} bytes; a checkpoint's config is at "
            f"most {MAX_CONFIG_BYTES // 2**20} MiB"
        )
    try:
        text = config_path.read_bytes()[: MAX_CONFIG_BYTES + 1].decode("utf-8")
    except UnicodeDecodeError as error:
        byte = error.object[error.start]
        raise CheckpointError(
            f"{config_path}: not UTF-8 text (byte {byte:#04x} at offset {error.start}); "
            "a checkpoint's config.yaml is YAML"
        ) from None
    try:
        config = yaml.load(text, Loader=_NoAliasLoader)
    except yaml.YAMLError as error:
        problem = " ".join(str(error).split())  # PyYAML's message spans several lines
        raise CheckpointError(f"{config_path}: not valid YAML ({problem})") from None
    if not isinstance(config, dict) or "model" not in config:
        raise CheckpointError(f"{config_path}: no 'model:' key at the top level")
    return config


def _expected_tensors(
    kind: Kind,
    n_layers: int,
    d_model: int,
    d_features: int,
    activation: Activation,
    input_standardizer: Standardizer,
    output_standardizer: Standardizer,
) -> tuple[dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """(required, optional) tensor names with their shapes; an optional shape of () means any."""
    required: dict[str, tuple[int, ...]] = {
        "encoder.W": (n_layers, d_model, d_features),
        "encoder.b": (n_layers, d_features),
    }
    optional: dict[str, tuple[int, ...]] = {}
    if kind == "clt":
        for target in range(n_layers):
            required[f"decoder.W_{target}"] = (target + 1, d_features, d_model)
        required["decoder.b"] = (n_layers, d_model)
    else:
        required["decoder.W"] = (n_layers, d_features, d_model)
        optional["decoder.b"] = (n_layers, d_model)
    if activation.source == "JumpReLU":
        required["nonlinearity.theta"] = (1, n_layers, d_features)
        optional["nonlinearity.bandwidth"] = ()
    elif activation.source == "BatchTopK":
        required["nonlinearity.threshold"] = (1,)
    elif activation.source == "PerLayerBatchTopK":
        required["nonlinearity.threshold"] = (n_layers,)
    for prefix, standardizer in (
        ("input_standardizer", input_standardizer),
        ("output_standardizer", output_standardizer),
    ):
        if standardizer.has_tensors:
            shape = (n_layers, d_model) if standardizer.kind == "dimensionwise" else (n_layers,)
            required[f"{prefix}.mean"] = shape
            required[f"{prefix}.std"] = shape
    return required, optional


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Validate a crosslayer-transcoder checkpoint folder and describe it, reading no weights.

    Raises ``CheckpointError`` naming the file, the key and what is wrong for: a missing folder
    or file, YAML without ``model:``, an unknown ``class_path``, config numbers that are not
    positive integers, a file that is not safetensors (or is truncated), a missing or extra
    tensor, and a tensor shape that disagrees with the config. Non-finite values are found when
    tensors are read (``Checkpoint.open_tensors``), i.e. during conversion.
    """
    path = Path(path).expanduser()
    config = parse_config(load_config(path), path / CONFIG_FILE)
    shapes, dtype = _tensor_shapes(path / WEIGHTS_FILE)
    check_tensors(config, shapes, path / WEIGHTS_FILE)
    return Checkpoint(path=path, **vars(config), tensor_shapes=shapes, tensor_dtype=dtype)


def parse_config(config: dict[str, Any], config_path: str | Path) -> TranscoderConfig:
    """The transcoder a config's ``model:`` tree describes (``config_path`` names where the tree
    came from in errors): known classes only, positive sizes that agree, a valid ``k``.

    The tree is the transcoder (``CrossLayerTranscoder``) or a Lightning module of the library
    whose ``init_args.model`` is the transcoder (a LightningCLI training config).
    """
    class_path, model_args = _node(config["model"], "model", config_path)
    where = "model"
    if class_path in _WRAPPER_CLASSES:
        class_path, model_args = _node(
            model_args.get("model"), "model.init_args.model", config_path
        )
        where = "model.init_args.model"
    _known(_MODEL_CLASSES, class_path, where, config_path)
    model_tree = config["model"]
    # The library writes `is_folded` under `model:`; checkpoints older than folding lack it.
    is_folded = model_tree.get("is_folded", config.get("is_folded", False))
    if not isinstance(is_folded, bool):
        raise CheckpointError(f"{config_path}: 'model.is_folded' must be true or false")

    def part(name: str) -> tuple[str, dict[str, Any], str]:
        if name not in model_args:
            raise CheckpointError(f"{config_path}: '{where}.init_args' has no '{name}'")
        part_path, part_args = _node(model_args[name], f"{where}.init_args.{name}", config_path)
        return part_path, part_args, f"{where}.init_args.{name}"

    encoder_path, encoder_args, encoder_where = part("encoder")
    _known(_ENCODER_CLASSES, encoder_path, encoder_where, config_path)
    decoder_path, decoder_args, decoder_where = part("decoder")
    kind: Kind = _known(_DECODER_CLASSES, decoder_path, decoder_where, config_path)
    nonlinearity_path, nonlinearity_args, nonlinearity_where = part("nonlinearity")
    source = _known(_NONLINEARITY_CLASSES, nonlinearity_path, nonlinearity_where, config_path)
    standardizers = []
    for name in ("input_standardizer", "output_standardizer"):
        # Absent or null means none: the library's save_pretrained folds by default and then
        # writes `input_standardizer: null` (every published checkpoint looks like that).
        if model_args.get(name) is not None:
            std_path, _, std_where = part(name)
            standardizers.append(
                Standardizer(_known(_STANDARDIZER_CLASSES, std_path, std_where, config_path))
            )
        else:
            standardizers.append(Standardizer("identity"))
    input_standardizer, output_standardizer = standardizers

    n_layers = _positive_int(
        encoder_args.get("n_layers"), f"{encoder_where}.init_args.n_layers", config_path
    )
    d_model = _positive_int(
        encoder_args.get("d_acts"), f"{encoder_where}.init_args.d_acts", config_path
    )
    d_features = _positive_int(
        encoder_args.get("d_features"), f"{encoder_where}.init_args.d_features", config_path
    )
    for key, expected in (("n_layers", n_layers), ("d_acts", d_model), ("d_features", d_features)):
        if key in decoder_args and decoder_args[key] != expected:
            raise CheckpointError(
                f"{config_path}: '{decoder_where}.init_args.{key}' is {decoder_args[key]!r} "
                f"but the encoder says {expected}"
            )

    if source == "PerLayerTopK":
        k = _positive_int(
            nonlinearity_args.get("k"), f"{nonlinearity_where}.init_args.k", config_path
        )
        if k > d_features:
            raise CheckpointError(
                f"{config_path}: '{nonlinearity_where}.init_args.k' is {k}, "
                f"more than d_features={d_features}"
            )
        activation = Activation(source=source, name="topk", k=k)
    elif source == "ReLU":
        activation = Activation(source=source, name="relu")
    else:
        activation = Activation(source=source, name="jump_relu")

    return TranscoderConfig(
        kind=kind,
        n_layers=n_layers,
        d_model=d_model,
        d_features=d_features,
        activation=activation,
        is_folded=is_folded,
        input_standardizer=input_standardizer,
        output_standardizer=output_standardizer,
    )


def check_tensors(
    config: TranscoderConfig, shapes: dict[str, tuple[int, ...]], weights_path: str | Path
) -> None:
    """``CheckpointError`` naming ``weights_path`` and the tensor when ``shapes`` (every tensor's
    shape) holds a tensor too many or too few for ``config``, or one of another shape."""
    required, optional = _expected_tensors(
        config.kind,
        config.n_layers,
        config.d_model,
        config.d_features,
        config.activation,
        config.input_standardizer,
        config.output_standardizer,
    )
    if config.is_folded:
        # A folded checkpoint may still carry its (already applied) standardizer statistics.
        for prefix in ("input_standardizer", "output_standardizer"):
            for stat in ("mean", "std"):
                key = f"{prefix}.{stat}"
                optional[key] = required.pop(key, ())
    _check_tensors(weights_path, shapes, required, optional)


def _tensor_shapes(weights_path: Path) -> tuple[dict[str, tuple[int, ...]], str]:
    """Shapes of every tensor in a safetensors file (header only) and the dominant dtype."""
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: missing (a checkpoint folder needs {WEIGHTS_FILE})")
    try:
        # numpy, not torch: only the header is read, and the run's door checks stay torch-free.
        with safe_open(str(weights_path), framework="numpy") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
            dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}  # noqa: SIM118
    except Exception as error:
        raise CheckpointError(
            f"{weights_path}: not a readable safetensors file, or truncated "
            f"({type(error).__name__}: {error})"
        ) from None
    dtype_names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
    dtype = "float32" if "F32" in dtypes else dtype_names.get(min(dtypes, default="F32"), "?")
    return shapes, dtype


def _check_tensors(
    weights_path: str | Path,
    shapes: dict[str, tuple[int, ...]],
    required: dict[str, tuple[int, ...]],
    optional: dict[str, tuple[int, ...]],
) -> None:
    missing = sorted(set(required) - set(shapes))
    if missing:
        raise CheckpointError(
            f"{weights_path}: missing tensor '{missing[0]}'"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    extra = sorted(set(shapes) - set(required) - set(optional))
    if extra:
        raise CheckpointError(
            f"{weights_path}: unexpected tensor '{extra[0]}' for this config"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    for key, shape in shapes.items():
        expected = required.get(key, optional.get(key))
        if expected and shape != expected:
            raise CheckpointError(
                f"{weights_path}: tensor '{key}' has shape {list(shape)}, but the config implies "
                f"{list(expected)}"
            )
