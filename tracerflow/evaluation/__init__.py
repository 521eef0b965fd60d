"""Transcoder quality metrics (FVU, L0, feature density, replacement-model KL, top-1 agreement,
CE loss recovered), computed exactly over a streamed token corpus. No Prefect in here: the
``evaluate`` stage wraps ``evaluate_transcoder``. Definitions: ``docs/metrics.md``."""

from tracerflow.evaluation.evaluate import Progress, evaluate_transcoder
from tracerflow.evaluation.results import (
    DENSITY_LOG10_EDGES,
    METRICS_VERSION,
    Evaluation,
    LayerMetrics,
    PerTokenValues,
    ReplacementFidelity,
    TranscoderMetrics,
)

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
