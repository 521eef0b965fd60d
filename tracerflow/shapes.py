"""A run's model and transcoder shapes and its prompts' token counts, read without loading
anything: for the memory estimate (``tracerflow.memory``) at the run's door and in
``tracerflow presets``.

No torch: a local model's (the toy's) config and tokenizer, a Hub model's ``config.json`` and
``tokenizer.json`` where the Hugging Face cache holds them, the presets' models' shapes where it
does not (``KNOWN_CONFIGS``), a transcoder folder's config and safetensors headers through its
format (``transcoders.formats``), a Hub preset's declared layout. Anything else is None: its
shape is known once it is downloaded or loaded, and the door then says nothing about its memory.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from tracerflow.errors import CheckpointError, ConfigError
from tracerflow.memory import FILE_LOAD_COPIES, ModelShape, TranscoderShape

# The shapes of the presets' models, from their Hub ``config.json`` files, for when those are not
# in the cache yet (a cached config wins). Keyed by the repo TransformerLens downloads from.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "gpt2": {"n_layer": 12, "n_embd": 768, "n_head": 12, "vocab_size": 50257, "n_positions": 1024},
    "google/gemma-2-2b": {
        "num_hidden_layers": 26,
        "hidden_size": 2304,
        "num_attention_heads": 8,
        "num_key_value_heads": 4,
        "head_dim": 256,
        "intermediate_size": 9216,
        "vocab_size": 256000,
    },
    "meta-llama/Llama-3.2-1B": {
        "num_hidden_layers": 16,
        "hidden_size": 2048,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 64,
        "intermediate_size": 8192,
        "vocab_size": 128256,
    },
    "Qwen/Qwen3-0.6B": {
        "num_hidden_layers": 28,
        "hidden_size": 1024,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "intermediate_size": 3072,
        "vocab_size": 151936,
    },
}
# Tokens per character assumed for a prompt whose tokenizer is not on this machine yet.
CHARS_PER_TOKEN = 4


def model_shape(model: str) -> ModelShape | None:
    """``model``'s shape: the toy's or a local model folder's config, a cached Hub config, the
    presets' models' known configs; None if unknown."""
    from tracerflow.model_sources import local_model

    try:
        found = local_model(model)  # the toy, or a local model folder
    except ConfigError:
        return None
    if found is not None:
        shape = shape_of_config(found.config)
        return replace(shape, load_copies=FILE_LOAD_COPIES) if shape is not None else None
    config = _cached_json(model, "config.json") or KNOWN_CONFIGS.get(_official_name(model) or "")
    if config is None:
        return None
    return shape_of_config(config.get("text_config") or config)


def shape_of_config(config: dict[str, Any]) -> ModelShape | None:
    """A ``ModelShape`` from a TransformerLens config (the toy's) or a Hugging Face
    ``config.json`` (GPT-2's keys, or the Llama family's); None for keys it does not know."""
    try:
        return _shape_of_config(config)
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def _shape_of_config(config: dict[str, Any]) -> ModelShape | None:
    if "d_model" in config:  # TransformerLens's own names
        rotary = config.get("positional_embedding_type") == "rotary"
        return ModelShape(
            n_layers=config["n_layers"],
            d_model=config["d_model"],
            n_heads=config["n_heads"],
            d_head=config["d_head"],
            d_mlp=config["d_mlp"],
            d_vocab=config["d_vocab"],
            n_positions=0 if rotary else config.get("n_ctx", 0),
            n_kv_heads=config.get("n_key_value_heads"),
            gated_mlp=bool(config.get("gated_mlp", False)),
        )
    if "n_embd" in config:  # GPT-2: TransformerLens takes d_mlp = 4 d_model, whatever n_inner
        d_model, n_heads = config["n_embd"], config["n_head"]
        return ModelShape(
            n_layers=config["n_layer"],
            d_model=d_model,
            n_heads=n_heads,
            d_head=d_model // n_heads,
            d_mlp=4 * d_model,
            d_vocab=config["vocab_size"],
            n_positions=config["n_positions"],
        )
    if "hidden_size" in config and "num_hidden_layers" in config:  # Llama, Qwen, Gemma
        d_model, n_heads = config["hidden_size"], config["num_attention_heads"]
        return ModelShape(
            n_layers=config["num_hidden_layers"],
            d_model=d_model,
            n_heads=n_heads,
            d_head=config.get("head_dim") or d_model // n_heads,
            d_mlp=config["intermediate_size"],
            d_vocab=config["vocab_size"],
            n_kv_heads=config.get("num_key_value_heads"),
            gated_mlp=True,
        )
    return None


def transcoder_shape(source: str) -> TranscoderShape | None:
    """The shape of transcoder ``source``: a preset's (its folder's, or its declared shape for a
    Hub preset), a local folder's through its format; None for a Hub repo not downloaded, or a
    format whose shape only reading its weights tells."""
    from tracerflow.presets import find_preset

    preset = find_preset(source)
    if preset is not None:
        if preset.is_builtin:
            return folder_transcoder_shape(preset.transcoder_path())
        return preset_transcoder_shape(preset)
    folder = Path(source).expanduser()
    return folder_transcoder_shape(folder) if folder.is_dir() else None


def preset_transcoder_shape(preset: Any) -> TranscoderShape | None:
    """A Hub preset's shape, from its declared layout (``presets.yaml``); None without one or
    without its feature count."""
    layout = preset.layout
    if layout is None or layout.d_features is None:
        return None
    return TranscoderShape(
        kind=preset.kind,
        n_layers=layout.n_layers,
        d_model=layout.d_model,
        d_features=layout.d_features,
        k=layout.k,
        skip=layout.skip,
    )


def folder_transcoder_shape(folder: Path) -> TranscoderShape | None:
    """From the folder's format: its config and safetensors headers (no weights, no torch)."""
    from tracerflow.transcoders.formats import source_format

    try:
        found = source_format(folder)
        if found.dimensions(folder) is None:  # only reading the weights would tell
            return None
        fields = found.describe(folder)
    except (CheckpointError, ConfigError):
        return None
    return TranscoderShape(
        kind=fields["kind"],
        n_layers=fields["n_layers"],
        d_model=fields["d_model"],
        d_features=fields["d_features"],
        k=fields.get("k"),
        skip=bool(fields.get("skip_connection")),
    )


def token_count(model: str, prompt: str) -> int:
    """Tokens ``model`` sees for ``prompt``, BOS included: counted by a local model's tokenizer
    (the toy's among them) or the cached Hub tokenizer; else about one per ``CHARS_PER_TOKEN``
    characters."""
    from tracerflow.model_sources import local_model

    try:
        found = local_model(model)
    except ConfigError:
        found = None
    path = str(found.tokenizer_dir / "tokenizer.json") if found is not None else None
    if path is None or not Path(path).is_file():
        path = _cached_file(model, "tokenizer.json")
    if path is not None:
        return tokenizer_token_count(prompt, Path(path))
    return math.ceil(len(prompt) / CHARS_PER_TOKEN) + 1


def tokenizer_token_count(prompt: str, tokenizer_json: Path) -> int:
    """Tokens a model sees for ``prompt``: its tokenizer's tokens plus the BOS it prepends
    (counted with ``tokenizer.json`` alone, without loading the model or torch)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    return len(tokenizer.encode(prompt, add_special_tokens=False).ids) + 1


def _official_name(model: str) -> str | None:
    from tracerflow.model_sources import official_model_name

    try:
        return official_model_name(model)
    except ConfigError:
        return None


def _cached_file(model: str, name: str) -> str | None:
    """``name`` of ``model``'s Hub repo where the Hugging Face cache holds it."""
    from huggingface_hub import try_to_load_from_cache

    from tracerflow.model_sources import hub_cache_dir

    repo_id = _official_name(model)
    if repo_id is None:
        return None
    cached = try_to_load_from_cache(repo_id, name, cache_dir=hub_cache_dir())
    return cached if isinstance(cached, str) else None


def _cached_json(model: str, name: str) -> dict[str, Any] | None:
    path = _cached_file(model, name)
    if path is None:
        return None
    try:
        loaded = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None
