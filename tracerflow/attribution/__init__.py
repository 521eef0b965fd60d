"""Attribution graphs, fast on CPUs: circuit-tracer's algorithm and graph with less waste.

``attribute`` is the stage's pure function (no Prefect). See ``run.py`` for what it changes
relative to ``circuit_tracer.attribute`` and ``linear_backward.py`` for how.
"""

from tracerflow.attribution.resources import Usage
from tracerflow.attribution.run import (
    CIRCUIT_TRACER_BATCH_SIZE,
    AttributionResult,
    attribute,
    default_block_size,
    fast_path_unavailable,
)

__all__ = [
    "CIRCUIT_TRACER_BATCH_SIZE",
    "AttributionResult",
    "Usage",
    "attribute",
    "default_block_size",
    "fast_path_unavailable",
]
