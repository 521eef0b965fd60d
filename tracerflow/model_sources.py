"""Where a run's model comes from, checked without loading it: the built-in toy model, or a
TransformerLens model name whose Hugging Face repo is in the local cache (offline) or whose Hub
answers (online).

Cheap on purpose (no torch, no transformers, no weights): the run's door check
(``flows.validation``) asks it before anything starts, and ``models`` asks it again right
before it downloads, so the two cannot disagree on which names are models.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import sys
from pathlib import Path
from types import ModuleType
from urllib.parse import urlparse

from tracerflow import toy
from tracerflow.errors import ConfigError, SourceError

HUB_PROBE_TIMEOUT_S = 3.0
_TRUE = {"1", "true", "yes", "on"}


def hub_offline() -> bool:
    """True when the user asked for offline mode (``HF_HUB_OFFLINE``/``TRANSFORMERS_OFFLINE``)."""
    from huggingface_hub import constants

    env = any(
        os.environ.get(name, "").strip().lower() in _TRUE
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )
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
        "model name (e.g. 'gpt2')"
    )


def hub_cache_dir() -> Path:
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
