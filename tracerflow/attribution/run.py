"""tracerflow's attribution: circuit-tracer's algorithm and graph, without its waste on CPUs.

``attribute`` follows ``circuit_tracer.attribute`` (0.5.0) phase by phase (``phases.py``): the
same targets, feature ranking, visiting order and packaging. It replaces only how a block of
attribution rows is computed (``linear_backward.LinearBackward`` instead of a batch-sized forward
pass plus autograd plus gathering hooks). The graph equals circuit-tracer's at the same
``batch_size``: identical features, selection and logits, adjacency equal to float rounding.

It is guarded: with another circuit-tracer version, or a model the explicit backward does not
cover, it warns and runs circuit-tracer's own ``attribute``.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import torch

from tracerflow.attribution.phases import Progress, run_fast_path
from tracerflow.attribution.resources import Usage, peak_rss_bytes, reset_peak_rss
from tracerflow.attribution.stock import run_stock
from tracerflow.compat import circuit_tracer_mismatch
from tracerflow.machine import torch_threads
from tracerflow.parameters import CIRCUIT_TRACER_BATCH_SIZE

if TYPE_CHECKING:
    from circuit_tracer.graph import Graph

logger = logging.getLogger(__name__)

# ``batch_size`` keeps circuit-tracer's meaning. Besides rows per backward pass it sets how often
# features are re-ranked when ``max_feature_nodes`` binds (every 4 batches), so it is part of what
# defines the graph, on either path. Its default is circuit-tracer's own
# (``tracerflow.parameters.CIRCUIT_TRACER_BATCH_SIZE``), so that the default graph is
# circuit-tracer's default graph; the fast path computes rows in blocks of its own size, which
# leaves the graph unchanged, while circuit-tracer's own path (the fallback) pads every backward
# pass to ``batch_size`` rows: give it a smaller batch size on a CPU.
# Rows per explicit backward block. On CPU it is GEMM-bound and a block only touches positions up
# to its last source (sources are sorted by layer, then position; ~16 per position at k=16):
# 32 measured best of 16/32/64/128 at the notebook's shape (docs/performance.md).
DEFAULT_BLOCK_SIZE = {"cpu": 32, "cuda": 512}


@dataclass
class AttributionResult:
    """A graph and what it cost.

    ``batch_size`` is the one used: the graph equals ``circuit_tracer.attribute(...,
    batch_size=batch_size)`` (it matters only when ``max_feature_nodes`` binds: it sets how often
    circuit-tracer re-ranks features). ``block_size`` is how many rows each explicit backward
    pass computed (the fast path's own unit of work; it does not change the graph).
    ``phase_usage`` has wall/user/system time and page faults per phase (``precompute``,
    ``forward``, ``inputs``, ``logits``, ``features``, ``package``, ``total``).
    ``peak_rss_bytes`` is the process's peak RSS during the call (Linux), ``peak_device_bytes``
    the peak CUDA memory allocated (on CUDA). ``threads`` is torch's intra-op thread count the
    whole call ran with. ``stock_reason`` says why circuit-tracer's own attribution ran (None on
    the fast path).
    """

    graph: Graph
    phase_seconds: dict[str, float]
    batch_size: int
    threads: int
    peak_rss_bytes: int | None
    phase_usage: dict[str, Usage] = field(default_factory=dict)
    fast_path: bool = True
    block_size: int | None = None
    peak_device_bytes: int | None = None
    stock_reason: str | None = None


def fast_path_unavailable(model: Any) -> str | None:
    """Why ``attribute`` would fall back to circuit-tracer's own path, or None."""
    mismatch = circuit_tracer_mismatch()
    if mismatch is not None:
        return mismatch
    from tracerflow.attribution.linear_backward import unsupported_reason

    return unsupported_reason(model)


def default_block_size(device: torch.device | str) -> int:
    return DEFAULT_BLOCK_SIZE.get(torch.device(device).type, DEFAULT_BLOCK_SIZE["cuda"])


def attribute(
    prompt: str | torch.Tensor,
    model: Any,
    *,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_feature_nodes: int | None = None,
    batch_size: int = CIRCUIT_TRACER_BATCH_SIZE,
    offload: Literal["cpu", "disk"] | None = None,
    verbose: bool = False,
    progress: Progress | None = None,
    block_size: int | None = None,
    threads: int | None = None,
    fast_path_on_cuda: bool = False,
) -> AttributionResult:
    """Attribution graph of ``prompt`` under ``model`` (a circuit-tracer ``ReplacementModel``).

    Arguments mean what they mean for ``circuit_tracer.attribute``; the graph equals its graph
    at the same ``batch_size`` (default: circuit-tracer's, 512). ``progress(done, total)`` is
    called as feature rows are computed.
    ``block_size`` (None: per device) is the fast path's rows per backward pass.
    ``threads`` is torch's intra-op thread count for the call (None: the process's current
    setting); the process's setting is restored afterwards. The same inputs at the same thread
    count on the same machine give the same graph, bit for bit. On CUDA the fast path runs only
    with ``fast_path_on_cuda`` (``stock_path_reason``).
    """
    with torch_threads(threads) as used_threads:
        device = torch.device(model.cfg.device)
        _reset_peak_memory(device)
        options: dict[str, Any] = {
            "max_n_logits": max_n_logits,
            "desired_logit_prob": desired_logit_prob,
            "max_feature_nodes": max_feature_nodes,
            "offload": offload,
        }
        reason = stock_path_reason(device, fast_path_unavailable(model), fast_path_on_cuda)
        if reason is None:
            block_size = block_size or default_block_size(device)
            graph, usage = run_fast_path(
                prompt,
                model,
                batch_size=batch_size,
                block_size=block_size,
                verbose=verbose,
                progress=progress,
                **options,
            )
        else:
            block_size = batch_size
            graph, usage = _run_circuit_tracer(
                prompt, model, reason, batch_size, verbose, progress, options
            )
        return AttributionResult(
            graph=graph,
            phase_seconds={name: phase.wall_s for name, phase in usage.items()},
            batch_size=batch_size,
            threads=used_threads,
            peak_rss_bytes=peak_rss_bytes(),
            phase_usage=usage,
            fast_path=reason is None,
            block_size=block_size,
            peak_device_bytes=_peak_device_bytes(device),
            stock_reason=reason,
        )


def _reset_peak_memory(device: torch.device) -> None:
    reset_peak_rss()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _peak_device_bytes(device: torch.device) -> int | None:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


# The fast path has not run on a GPU yet: until a GPU run shows it gives circuit-tracer's graph
# there, faster, CUDA takes circuit-tracer's own attribution unless the user opts in.
CUDA_NOT_VALIDATED = (
    "CUDA, where the fast path has not been validated yet (TRACERFLOW_CUDA_FAST_PATH=1 opts in)"
)


def stock_path_reason(
    device: torch.device, unavailable: str | None, fast_path_on_cuda: bool
) -> str | None:
    """Why this call takes circuit-tracer's own attribution, or None for the fast path:
    ``unavailable`` (what the fast path does not cover), else an unvalidated device."""
    if unavailable is not None:
        return unavailable
    if device.type == "cuda" and not fast_path_on_cuda:
        return CUDA_NOT_VALIDATED
    return None


def _run_circuit_tracer(
    prompt: str | torch.Tensor,
    model: Any,
    reason: str,
    batch_size: int,
    verbose: bool,
    progress: Progress | None,
    options: dict[str, Any],
) -> tuple[Graph, dict[str, Usage]]:
    """circuit-tracer's own ``attribute``: a warning says why, unless it is the default for
    the device (CUDA, not validated yet), which is logged."""
    if reason == CUDA_NOT_VALIDATED:
        logger.info("running circuit-tracer's attribute on %s", reason)
    else:
        warnings.warn(
            f"tracerflow's fast attribution does not cover this model ({reason}); "
            "running circuit-tracer's attribute, which is slower on CPU",
            RuntimeWarning,
            stacklevel=3,
        )
    graph, usage = run_stock(prompt, model, echo=verbose, batch_size=batch_size, **options)
    if progress is not None:
        progress(len(graph.selected_features), len(graph.selected_features))
    return graph, usage
