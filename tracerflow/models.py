"""Build circuit-tracer replacement models: the built-in toy model and real TransformerLens ones.

``toy-gpt2`` is assembled offline from package data (config, shipped tokenizer, trained weights
under circuit-tracer's wrapper names). A real name (``gpt2``, ...) downloads from the Hugging Face
Hub; without network that fails at once with a ``SourceError`` saying what is missing and how to
run offline, instead of ~25 s of retries and a traceback.
"""

from __future__ import annotations

import json
import re
from typing import Any

import torch
from circuit_tracer.replacement_model.replacement_model_transformerlens import (
    TransformerLensReplacementModel,
)
from safetensors.torch import load_file

from tracerflow import toy
from tracerflow.errors import ConfigError, SourceError
from tracerflow.model_sources import check_model_source
from tracerflow.transcoders import Transcoder

ReplacementModel = TransformerLensReplacementModel
"""What ``load_replacement_model`` returns (circuit-tracer's TransformerLens backend)."""


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_replacement_model(
    model_name: str,
    transcoders: Transcoder,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> ReplacementModel:
    """A ``ReplacementModel`` of ``model_name`` with ``transcoders`` installed on its MLPs.

    ``model_name`` is ``toy-gpt2`` (the built-in model, offline) or a TransformerLens model name
    such as ``gpt2`` (from the Hub, or its local cache with ``HF_HUB_OFFLINE=1``).
    ``transcoders`` come from ``tracerflow.transcoders.load_converted``.
    Raises ``SourceError`` when a real model cannot be downloaded, ``ConfigError`` for a name
    TransformerLens does not know.
    """
    device = torch.device(device) if device is not None else default_device()
    if model_name == toy.TOY_MODEL_NAME:
        return _load_toy(transcoders, device, dtype)
    return _load_pretrained(model_name, transcoders, device, dtype)


def model_identity(model_name: str) -> str:
    """What identifies a model's weights in cache keys, without loading it: the sha256 of the
    shipped weights for the toy model; the name and TransformerLens version for Hub models
    (TransformerLens pins which weights a name means)."""
    if model_name == toy.TOY_MODEL_NAME:
        from tracerflow.fsutil import sha256_file

        return f"{model_name}:{sha256_file(toy.model_dir() / 'model.safetensors')}"
    from importlib.metadata import version

    return f"{model_name}:transformer-lens-{version('transformer-lens')}"


# --- the toy model ---------------------------------------------------------------------------


def toy_model_config(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Any:
    """The toy model's ``HookedTransformerConfig``, its tokenizer being the shipped folder."""
    from transformer_lens import HookedTransformerConfig

    fields = json.loads((toy.model_dir() / "config.json").read_text())
    return HookedTransformerConfig(
        **fields,
        tokenizer_name=str(toy.tokenizer_dir()),
        device=str(device),
        dtype=dtype,
        init_weights=False,  # every weight is loaded below; leave the global RNG alone
    )


def _replacement_key(name: str) -> str:
    """HookedTransformer parameter name -> its name once circuit-tracer wrapped the modules."""
    name = re.sub(r"^(blocks\.\d+\.mlp)\.", r"\1.old_mlp.", name)
    return re.sub(r"^unembed\.", "unembed.old_unembed.", name)


def _load_toy(
    transcoders: Transcoder, device: torch.device, dtype: torch.dtype
) -> ReplacementModel:
    model = TransformerLensReplacementModel.from_config(
        toy_model_config(device, dtype), transcoders
    )
    weights = load_file(str(toy.model_dir() / "model.safetensors"))
    state = {_replacement_key(name): tensor.to(dtype) for name, tensor in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    parameters = {name for name, _ in model.named_parameters()}
    missing_parameters = [
        name for name in missing if name in parameters and not name.startswith("transcoders.")
    ]
    if unexpected or missing_parameters:
        raise ConfigError(
            f"{toy.model_dir()}: weights do not match the model config "
            f"(unexpected {sorted(unexpected)[:3]}, missing {missing_parameters[:3]}); "
            "regenerate them with `python -m tracerflow.toy.train`"
        )
    model.eval()
    return model


# --- real models -----------------------------------------------------------------------------


def _load_pretrained(
    model_name: str, transcoders: Transcoder, device: torch.device, dtype: torch.dtype
) -> ReplacementModel:
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
    model.eval()
    return model
