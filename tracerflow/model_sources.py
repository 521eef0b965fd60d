"""Where a run's model comes from, checked without loading it: the built-in toy model, a local
model folder (a TransformerLens config, safetensors weights and a tokenizer, like the toy's), or a
TransformerLens model name whose Hugging Face repo is in the local cache (offline) or whose Hub
answers (online). Also the model's (n_layers, d_model) where a config file tells it, for the door
to compare with a transcoder's.

Cheap on purpose (no torch, no transformers, no weights): the run's door check
(``flows.validation``) asks it before anything starts, and ``models`` asks it again right
before it downloads, so the two cannot disagree on which names are models.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

from tracerflow import toy
from tracerflow.errors import ConfigError, SourceError

HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def hub_offline(transformers_too: bool = True) -> bool:
    """True when the user asked for offline mode: ``HF_HUB_OFFLINE``, and with
    ``transformers_too`` (what loading a model obeys) ``TRANSFORMERS_OFFLINE`` too."""
    from huggingface_hub import constants

    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if transformers_too else ("HF_HUB_OFFLINE",)
    env = any(os.environ.get(name, "").strip().lower() in _TRUE for name in names)
    return env or bool(constants.HF_HUB_OFFLINE)


def _transformer_lens_names() -> ModuleType:
    """TransformerLens's registry of the models it loads (``OFFICIAL_MODEL_NAMES``,
    ``MODEL_ALIASES``). Its module ``supported_models`` is plain data, but importing it through
    the package runs ``transformer_lens/__init__``, which imports torch and transformers (about
    6 s here): the door check reads the data file on its own instead. A TransformerLens without
    that file gets the ordinary import."""
    loaded = sys.modules.get("transformer_lens.supported_models")
    if loaded is not None:
        return loaded
    package = importlib.util.find_spec("transformer_lens")
    origin = Path(package.origin) if package is not None and package.origin else None
    data_file = origin.parent / "supported_models.py" if origin is not None else None
    if data_file is None or not data_file.is_file():
        import transformer_lens.supported_models

        return transformer_lens.supported_models
    spec = importlib.util.spec_from_file_location("_tracerflow_tl_supported_models", data_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_model_name(model_name: str) -> str:
    """The Hub repo TransformerLens downloads ``model_name`` from (an official name or one of its
    aliases, in any case, as TransformerLens's ``get_official_model_name`` reads it);
    ``ConfigError`` if unknown."""
    names = _transformer_lens_names()
    official_of: dict[str, str] = {}  # built as TransformerLens builds it: a later entry wins
    for official in names.OFFICIAL_MODEL_NAMES:
        for alias in names.MODEL_ALIASES.get(official, []):
            official_of[alias.lower()] = official
        official_of[official.lower()] = official
    if model_name.lower() in official_of:
        return official_of[model_name.lower()]
    raise ConfigError(
        f"unknown model '{model_name}': neither '{toy.TOY_MODEL_NAME}' nor a TransformerLens "
        "model name (e.g. 'gpt2', 'Qwen/Qwen3-0.6B') nor a local model folder"
    )


def hub_cache_dir() -> Path:
    """The Hugging Face cache as the environment names it now (huggingface_hub reads it once,
    at import)."""
    from huggingface_hub import constants

    return Path(os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE)


def check_model_source(model_name: str) -> str:
    """Fail fast, before any download starts, when ``model_name`` cannot be fetched.

    Offline mode: the model's ``config.json`` must be in the local Hugging Face cache. Online:
    the Hub endpoint must accept a TCP connection within ``HUB_PROBE_TIMEOUT_S``.
    Returns the Hub repo id. ``ConfigError`` for a name TransformerLens does not know,
    ``SourceError`` for a model that cannot be fetched.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    repo_id = official_model_name(model_name)
    how_offline = (
        "To run offline, download it once where the Hub is reachable "
        f"(`huggingface-cli download {repo_id}`), copy that Hugging Face cache here (or set "
        "HF_HOME to a folder holding the snapshot) and set HF_HUB_OFFLINE=1; give transcoders as a "
        "local snapshot folder. Or use a built-in toy preset (`tracerflow presets`), which needs "
        "no network."
    )
    if hub_offline():
        cache_dir = hub_cache_dir()
        cached = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache_dir)
        if not isinstance(cached, str):
            raise SourceError(
                f"cannot load model '{model_name}': the Hugging Face repo '{repo_id}' is not in "
                f"the local cache ({cache_dir}) and HF_HUB_OFFLINE=1 forbids downloading it. "
                + how_offline
            )
        return repo_id
    endpoint = urlparse(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as error:
        raise SourceError(
            f"cannot download model '{model_name}' (Hugging Face repo '{repo_id}'): "
            f"{host}:{port} is unreachable ({type(error).__name__}: {error}). " + how_offline
        ) from error
    return repo_id


# --- local model folders -----------------------------------------------------------------------

MODEL_CONFIG_FILE = "config.json"  # HookedTransformerConfig fields
MODEL_WEIGHTS_FILE = "model.safetensors"  # HookedTransformer parameter names
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
# What a TransformerLens config must state; the rest has TransformerLens's defaults.
_REQUIRED_FIELDS = ("n_layers", "d_model", "d_head", "n_ctx")
# Set by tracerflow when it builds the model, whatever the file says.
_RUN_FIELDS = ("device", "dtype", "init_weights", "tokenizer_name")
_MAX_CONFIG_BYTES = 1 << 20


@dataclass(frozen=True)
class LocalModel:
    """A model whose files are on this machine: ``config`` holds ``HookedTransformerConfig``
    fields (without the ones tracerflow sets: device, dtype, init_weights, tokenizer_name),
    ``weights`` a safetensors file of ``HookedTransformer`` parameters by their names
    (``embed.W_E``, ``blocks.0.attn.W_Q``, ...), ``tokenizer_dir`` a folder
    ``AutoTokenizer.from_pretrained`` reads."""

    folder: Path
    config: dict[str, Any]
    weights: Path
    tokenizer_dir: Path

    @property
    def dimensions(self) -> tuple[int, int]:
        return int(self.config["n_layers"]), int(self.config["d_model"])

    @property
    def n_ctx(self) -> int:
        return int(self.config["n_ctx"])


def names_a_folder(model_name: str) -> bool:
    """Whether ``model_name`` means a local folder: an existing folder, or a name written as a
    path (``/``, ``./``, ``../``, ``~``). A TransformerLens name such as ``Qwen/Qwen3-0.6B`` is a
    folder only where such a folder exists in the working directory."""
    if model_name.startswith(("/", "./", "../", "~")) or model_name in (".", ".."):
        return True
    return Path(model_name).is_dir()


def local_model(model_name: str) -> LocalModel | None:
    """The built-in toy model or the local model folder ``model_name`` names, checked (config,
    weights' header, tokenizer; no weights read); None for a TransformerLens name.
    ``ConfigError`` naming the folder and what is wrong."""
    if model_name == toy.TOY_MODEL_NAME:
        return read_model_folder(toy.model_dir(), tokenizer_dir=toy.tokenizer_dir())
    if not names_a_folder(model_name):
        return None
    return read_model_folder(Path(model_name).expanduser())


def read_model_folder(folder: Path, tokenizer_dir: Path | None = None) -> LocalModel:
    """Check a local model folder without reading its weights: ``config.json`` holds
    TransformerLens config fields (at least n_layers, d_model, d_head, n_ctx), ``model.safetensors``
    has a safetensors header, and the tokenizer is in ``tokenizer_dir``, else where the config's
    ``tokenizer_name`` says (a path relative to the folder), else in the folder itself, else in
    its ``tokenizer/`` subfolder."""
    from tracerflow.errors import CheckpointError
    from tracerflow.transcoders.formats.base import read_safetensors_header

    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"model folder '{folder}' {what}")
    config_path = folder / MODEL_CONFIG_FILE
    if not config_path.is_file():
        raise ConfigError(
            f"'{folder}' is not a model folder: no {MODEL_CONFIG_FILE} (TransformerLens config "
            f"fields), {MODEL_WEIGHTS_FILE} and tokenizer files"
        )
    config = _read_json(config_path)
    missing = [name for name in _REQUIRED_FIELDS if name not in config]
    if missing:
        hub_config = "model_type" in config or "architectures" in config
        hint = (
            " (this is a Hugging Face config.json: put the model in the Hugging Face cache and "
            "give its TransformerLens name, or write a TransformerLens config)"
            if hub_config
            else ""
        )
        raise ConfigError(
            f"{config_path}: no {', '.join(missing)}; a model folder's config holds "
            f"TransformerLens HookedTransformerConfig fields{hint}"
        )
    for name in _REQUIRED_FIELDS:
        value = config[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{config_path}: '{name}' must be a positive integer, got {value!r}")
    weights = folder / MODEL_WEIGHTS_FILE
    if not weights.is_file():
        raise ConfigError(f"'{folder}' is not a model folder: no {MODEL_WEIGHTS_FILE}")
    try:
        read_safetensors_header(weights)
    except CheckpointError as error:
        raise ConfigError(str(error)) from None
    if tokenizer_dir is None:
        tokenizer_dir = _tokenizer_dir(folder, config, config_path)
    return LocalModel(
        folder=folder,
        config={key: value for key, value in config.items() if key not in _RUN_FIELDS},
        weights=weights,
        tokenizer_dir=tokenizer_dir,
    )


def _read_json(path: Path) -> dict[str, Any]:
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise ConfigError(f"{path}: {path.stat().st_size} bytes; too large for a config")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: not a JSON object")
    return config


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / name).is_file() for name in TOKENIZER_FILES)


def _tokenizer_dir(folder: Path, config: dict[str, Any], config_path: Path) -> Path:
    named = config.get("tokenizer_name")
    candidates = [folder / named] if isinstance(named, str) else [folder, folder / "tokenizer"]
    for candidate in candidates:
        if candidate.is_dir() and _has_tokenizer(candidate):
            return candidate.resolve()
    where = f"'{named}' (its tokenizer_name)" if isinstance(named, str) else "it or tokenizer/"
    raise ConfigError(
        f"{config_path}: no tokenizer in {where}: a model folder needs "
        f"{' or '.join(TOKENIZER_FILES)} (a tokenizer's save_pretrained folder)"
    )


# --- the model's shape, cheaply ------------------------------------------------------------------

# Hugging Face config.json names of (n_layers, d_model), by model family.
_HUB_LAYERS = ("num_hidden_layers", "n_layer", "n_layers", "num_layers")
_HUB_WIDTH = ("hidden_size", "n_embd", "d_model")


def model_dimensions(model_name: str) -> tuple[int, int] | None:
    """(n_layers, d_model) of ``model_name`` without loading it: from a local model's config, or
    from the ``config.json`` of its Hugging Face repo where that is in the local cache (the fields
    TransformerLens reads; a multimodal config's ``text_config``). None when no file at hand
    tells (not downloaded yet): the run checks it once the model is loaded."""
    found = local_model(model_name)
    if found is not None:
        return found.dimensions
    from huggingface_hub import try_to_load_from_cache

    repo_id = official_model_name(model_name)
    cached = try_to_load_from_cache(repo_id, MODEL_CONFIG_FILE, cache_dir=hub_cache_dir())
    if not isinstance(cached, str):
        return None
    try:
        config = _read_json(Path(cached))
    except (ConfigError, OSError):
        return None
    config = config.get("text_config") or config
    layers = next((config[key] for key in _HUB_LAYERS if isinstance(config.get(key), int)), None)
    width = next((config[key] for key in _HUB_WIDTH if isinstance(config.get(key), int)), None)
    return (layers, width) if layers is not None and width is not None else None


def model_identity(model_name: str) -> str:
    """What identifies a model's weights in cache keys, without loading it: the sha256 of the
    shipped weights for the toy model; for a local folder the sha256 of its config, weights and
    tokenizer files (not its path); the name and TransformerLens version for Hub models
    (TransformerLens pins which weights a name means)."""
    from tracerflow.fsutil import sha256_file

    if model_name == toy.TOY_MODEL_NAME:
        return f"{model_name}:{sha256_file(toy.model_dir() / 'model.safetensors')}"
    local = local_model(model_name)
    if local is not None:
        import hashlib

        files = [local.folder / "config.json", local.weights]
        files += sorted(path for path in local.tokenizer_dir.iterdir() if path.is_file())
        hashes = sorted({sha256_file(path) for path in files})
        return f"local-model:{hashlib.sha256(json.dumps(hashes).encode()).hexdigest()}"
    from importlib.metadata import version

    return f"{model_name}:transformer-lens-{version('transformer-lens')}"
