"""Build circuit-tracer replacement models: local model folders (the built-in toy model among
them) and TransformerLens models by name.

A local folder (``tracerflow.model_sources.LocalModel``: a TransformerLens config, safetensors
weights under TransformerLens's parameter names, a tokenizer) is assembled offline with
``ReplacementModel.from_config`` and its weights loaded as they are (no weight processing). A
TransformerLens name (``gpt2``, ``meta-llama/Llama-3.2-1B``, ``Qwen/Qwen3-0.6B``,
``google/gemma-2-2b``, ...) loads through TransformerLens from the Hugging Face Hub or its local
cache; without network that fails at once with a ``SourceError`` saying what is missing and how to
run offline, instead of ~25 s of retries and a traceback. Either way a transcoder of another depth
or width than the model is refused in one line (``check_fits``) before anything runs on it.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import torch
from safetensors.torch import load_file

from tracerflow import toy
from tracerflow.errors import ConfigError, SourceError
from tracerflow.machine import default_device
from tracerflow.model_sources import LocalModel, check_model_source, local_model

if TYPE_CHECKING:
    # What ``load_replacement_model`` returns (circuit-tracer's TransformerLens backend), imported
    # where it is used: circuit-tracer and TransformerLens take seconds to import, and a run whose
    # stages are all in the store never assembles a model.
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel as ReplacementModel,
    )

    from tracerflow.transcoders import Transcoder


def __getattr__(name: str) -> Any:
    """``ReplacementModel``, what ``load_replacement_model`` returns (circuit-tracer's
    TransformerLens backend), imported on first use."""
    if name == "ReplacementModel":
        from circuit_tracer.replacement_model.replacement_model_transformerlens import (
            TransformerLensReplacementModel,
        )

        return TransformerLensReplacementModel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_replacement_model(
    model_name: str,
    transcoders: Transcoder,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> ReplacementModel:
    """A ``ReplacementModel`` of ``model_name`` with ``transcoders`` installed on its MLPs.

    ``model_name`` is ``toy-gpt2`` (the built-in model, offline), a local model folder, or a
    TransformerLens model name such as ``gpt2`` (from the Hub, or its local cache with
    ``HF_HUB_OFFLINE=1``). ``transcoders`` come from ``tracerflow.transcoders.load_converted``;
    their hooks are their format's. Raises ``SourceError`` when a Hub model cannot be downloaded,
    ``ConfigError`` for a name TransformerLens does not know, a bad model folder, or transcoders
    of another shape than the model.
    """
    device = torch.device(device if device is not None else default_device())
    local = local_model(model_name)
    if local is not None:
        check_fits(transcoders, *local.dimensions, model_name)
        return load_local_model(local, transcoders, device, dtype)
    return _load_pretrained(model_name, transcoders, device, dtype)


def check_fits(transcoders: Transcoder, n_layers: int, d_model: int, model_name: str) -> None:
    """``ConfigError`` in one line when ``transcoders`` are not as deep and wide as the model
    (a CLT knows its ``d_model``; a PLT's is its layers' own)."""
    width = getattr(transcoders, "d_model", None)
    if width is None:
        width = transcoders.transcoders[0].d_model  # type: ignore[union-attr]
    found = (int(transcoders.n_layers), int(width))
    if found != (n_layers, d_model):
        raise ConfigError(
            f"the transcoder has {found[0]} layers of d_model {found[1]}, but model "
            f"'{model_name}' has {n_layers} layers of d_model {d_model}; give --model the model "
            "it was trained on"
        )


# --- local model folders (the toy model is one) ----------------------------------------------


def toy_model_config(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """The toy model's ``HookedTransformerConfig``, its tokenizer being the shipped folder."""
    toy_model = local_model(toy.TOY_MODEL_NAME)
    assert toy_model is not None
    return local_model_config(toy_model, device, dtype)


def local_model_config(
    local: LocalModel, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Any:
    """A local model's ``HookedTransformerConfig``: its config's fields, its tokenizer folder, and
    the device and dtype asked for; ``ConfigError`` when TransformerLens refuses the fields."""
    from transformer_lens import HookedTransformerConfig

    try:
        return HookedTransformerConfig(
            **local.config,
            tokenizer_name=str(local.tokenizer_dir),
            device=str(device),
            dtype=dtype,
            init_weights=False,  # every weight is loaded below; leave the global RNG alone
        )
    except (TypeError, ValueError, AssertionError) as error:
        raise ConfigError(
            f"{local.folder / 'config.json'}: not a TransformerLens config "
            f"({type(error).__name__}: {error})"
        ) from None


def _replacement_key(name: str) -> str:
    """HookedTransformer parameter name -> its name once circuit-tracer wrapped the modules."""
    name = re.sub(r"^(blocks\.\d+\.mlp)\.", r"\1.old_mlp.", name)
    return re.sub(r"^unembed\.", "unembed.old_unembed.", name)


def load_local_model(
    local: LocalModel, transcoders: Transcoder, device: torch.device, dtype: torch.dtype
) -> ReplacementModel:
    """``local``'s replacement model: built from its config, its weights loaded as they are.
    Every parameter of the model must be in the weights file, and nothing else."""
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )

    model = TransformerLensReplacementModel.from_config(
        local_model_config(local, device, dtype), transcoders
    )
    weights = load_file(str(local.weights))
    state = {_replacement_key(name): tensor.to(dtype) for name, tensor in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    parameters = {name for name, _ in model.named_parameters()}
    missing_parameters = [
        name for name in missing if name in parameters and not name.startswith("transcoders.")
    ]
    if unexpected or missing_parameters:
        regenerate = (
            "; regenerate them with `python -m tracerflow.toy.train`"
            if local.folder == toy.model_dir()
            else ""
        )
        raise ConfigError(
            f"{local.weights}: weights do not match the model config "
            f"(unexpected {sorted(unexpected)[:3]}, missing {missing_parameters[:3]}){regenerate}"
        )
    model.eval()
    return model


# --- real models -----------------------------------------------------------------------------


def _load_pretrained(
    model_name: str, transcoders: Transcoder, device: torch.device, dtype: torch.dtype
) -> ReplacementModel:
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )

    repo_id = check_model_source(model_name)
    try:
        model = TransformerLensReplacementModel.from_pretrained_and_transcoders(
            model_name, transcoders, device=device, dtype=dtype
        )
    except OSError as error:  # huggingface_hub/requests errors are OSErrors
        raise SourceError(
            f"cannot load model '{model_name}' (Hugging Face repo '{repo_id}'): "
            f"{type(error).__name__}: {error}"
        ) from error
    check_fits(transcoders, model.cfg.n_layers, model.cfg.d_model, model_name)
    model.eval()
    return model
