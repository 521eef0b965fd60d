"""Transcoder quality metrics (FVU, L0, feature density, replacement-model KL, top-1 agreement,
CE loss recovered), computed exactly over a streamed token corpus. No Prefect in here: the
``evaluate`` stage wraps ``evaluate_transcoder``. Definitions: ``docs/metrics.md``.

The computing names (``evaluate``) are imported on first use, so a run that finds its metrics
stored reads them (``results``) without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from tracerflow.evaluation.results import (
    DENSITY_LOG10_EDGES,
    METRICS_VERSION,
    Evaluation,
    LayerMetrics,
    PerTokenValues,
    ReplacementFidelity,
    TranscoderMetrics,
)

_COMPUTING = {"Progress": "evaluate", "evaluate_transcoder": "evaluate"}

__all__ = [
    "DENSITY_LOG10_EDGES",
    "METRICS_VERSION",
    "Evaluation",
    "LayerMetrics",
    "PerTokenValues",
    "Progress",
    "ReplacementFidelity",
    "TranscoderMetrics",
    "evaluate_transcoder",
]


def __getattr__(name: str) -> Any:
    if name not in _COMPUTING:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_COMPUTING[name]}"), name)
