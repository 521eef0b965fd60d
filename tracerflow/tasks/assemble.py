"""Stage 3, assemble: the ReplacementModel for (model, converted transcoder, dtype, device).

Assembling loads the base model and the transcoder (seconds to minutes for GPT-2 with a 16k CLT),
so each process builds a model once and reuses it for every prompt: a process-local cache, never
a Prefect result (a ReplacementModel is neither small nor picklable in any useful sense). The
attribute stage calls ``assembled_model`` only when it actually has to attribute, so a fully
cached re-run never loads a model at all.
"""

from __future__ import annotations

import atexit
import threading
from typing import Any

from tracerflow.transcoders.conversion import parse_dtype

_MODELS: dict[tuple[str, str, str, str], Any] = {}
_LOCK = threading.Lock()
# Held while a stage runs an assembled model with hooks of its own (attribution, evaluation):
# hooks are model-global, so two stages must never use one model at the same time.
MODEL_LOCK = threading.RLock()
# Dropped before the interpreter tears its modules down: a ReplacementModel's ``__del__`` resets
# its hooks through torch, which is imported late (by the first stage that computes) and so is
# among the first modules torn down.
atexit.register(_MODELS.clear)


def assembled_model(model_name: str, converted_path: str, dtype: str, device: str) -> Any:
    """The process's ReplacementModel for these inputs, built on first use."""
    # Imported here, not above: circuit-tracer and TransformerLens take seconds to import, and a
    # run whose stages are all in the store never gets here.
    from tracerflow.models import load_replacement_model
    from tracerflow.transcoders import load_converted

    cache_key = (model_name, converted_path, dtype, device)
    with _LOCK:  # two threads asking for the same model must not both load it
        if cache_key not in _MODELS:
            # One model at a time: a GPT-2 CLT replacement model is several GB.
            _MODELS.clear()
            transcoders = load_converted(converted_path, device=device, dtype=parse_dtype(dtype))
            _MODELS[cache_key] = load_replacement_model(
                model_name, transcoders, device=device, dtype=parse_dtype(dtype)
            )
        return _MODELS[cache_key]
