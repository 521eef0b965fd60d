"""tracerflow's attribution: circuit-tracer's algorithm and graph, without its waste on CPUs.

``attribute`` follows ``circuit_tracer.attribute`` (0.5.0) phase by phase — the same targets, the
same feature ranking and visiting order, the same packaging — and replaces only how a block of
attribution rows is computed (``linear_backward.LinearBackward`` instead of a batch-sized forward
pass plus autograd plus gathering hooks). The graph equals circuit-tracer's at the same
``batch_size``: identical features, selection and logits, adjacency equal to float rounding.

It is guarded: with another circuit-tracer version, or a model the explicit backward does not
cover, it warns and runs circuit-tracer's own ``attribute``.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from circuit_tracer.graph import Graph

from tracerflow.attribution.resources import Snapshot, Usage, peak_rss_bytes, reset_peak_rss
from tracerflow.attribution.stock import run_stock
from tracerflow.compat import circuit_tracer_mismatch

# ``batch_size`` keeps circuit-tracer's meaning. Besides rows per backward pass it sets how often
# features are re-ranked when ``max_feature_nodes`` binds (every 4 batches), so it is part of what
# defines the graph. The fast path defaults to circuit-tracer's own default, so that its default
# graph is circuit-tracer's default graph; it computes rows in blocks of its own size, which
# leaves the graph unchanged. circuit-tracer itself (the fallback) gets a size its CPU path can
# afford: at 512 it pads every backward to 512 rows and needs GBs per pass.
CIRCUIT_TRACER_BATCH_SIZE = 512
FALLBACK_BATCH_SIZE = {"cpu": 64, "cuda": CIRCUIT_TRACER_BATCH_SIZE}
# Rows per explicit backward block. On CPU it is GEMM-bound and a block only touches positions up
# to its last source (sources are sorted by layer, then position; ~16 per position at k=16):
# 32 measured best of 16/32/64/128 at the notebook's shape (docs/performance.md).
DEFAULT_BLOCK_SIZE = {"cpu": 32, "cuda": 512}

Progress = Callable[[int, int], None]


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
    whole call ran with.
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


def fast_path_unavailable(model: Any) -> str | None:
    """Why ``attribute`` would fall back to circuit-tracer's own path, or None."""
    mismatch = circuit_tracer_mismatch()
    if mismatch is not None:
        return mismatch
    from tracerflow.attribution.linear_backward import unsupported_reason

    return unsupported_reason(model)


def default_block_size(device: torch.device | str) -> int:
    return DEFAULT_BLOCK_SIZE.get(torch.device(device).type, DEFAULT_BLOCK_SIZE["cuda"])


def default_threads() -> int:
    """torch's intra-op thread count in this process now. In a process that has not changed it,
    torch's own default for the machine: its physical cores, or ``OMP_NUM_THREADS``."""
    return torch.get_num_threads()


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run the block at ``threads`` intra-op threads (None: as the process is set), then put the
    process's setting back. The count is a setting, never chosen by timing: float sums split
    over another number of threads round differently, and when ``max_feature_nodes`` binds a
    near-tie in the ranking could then select another feature."""
    before = torch.get_num_threads()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


def attribute(
    prompt: str | torch.Tensor,
    model: Any,
    *,
    max_n_logits: int = 10,
    desired_logit_prob: float = 0.95,
    max_feature_nodes: int | None = None,
    batch_size: int | None = None,
    offload: Literal["cpu", "disk"] | None = None,
    verbose: bool = False,
    progress: Progress | None = None,
    block_size: int | None = None,
    threads: int | None = None,
) -> AttributionResult:
    """Attribution graph of ``prompt`` under ``model`` (a circuit-tracer ``ReplacementModel``).

    Arguments mean what they mean for ``circuit_tracer.attribute``; the graph equals its graph
    at the same ``batch_size`` (None: circuit-tracer's default, 512; on the fallback path, a size
    the device can afford). ``progress(done, total)`` is called as feature rows are computed.
    ``block_size`` (None: per device) is the fast path's rows per backward pass.
    ``threads`` is torch's intra-op thread count for the call (None: the process's current
    setting); the process's setting is restored afterwards. The same inputs at the same thread
    count on the same machine give the same graph, bit for bit.
    """
    with torch_threads(threads) as used_threads:
        device = torch.device(model.cfg.device)
        reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        options: dict[str, Any] = {
            "max_n_logits": max_n_logits,
            "desired_logit_prob": desired_logit_prob,
            "max_feature_nodes": max_feature_nodes,
            "offload": offload,
        }

        reason = fast_path_unavailable(model)
        if reason is None:
            batch_size = batch_size or CIRCUIT_TRACER_BATCH_SIZE
            block_size = block_size or default_block_size(device)
            graph, usage = _attribute_fast(
                prompt,
                model,
                verbose=verbose,
                progress=progress,
                batch_size=batch_size,
                block_size=block_size,
                **options,
            )
        else:
            warnings.warn(
                f"tracerflow's fast attribution does not cover this model ({reason}); "
                "running circuit-tracer's attribute, which is slower on CPU",
                RuntimeWarning,
                stacklevel=2,
            )
            batch_size = batch_size or FALLBACK_BATCH_SIZE.get(
                device.type, CIRCUIT_TRACER_BATCH_SIZE
            )
            block_size = batch_size
            graph, usage = run_stock(prompt, model, echo=verbose, batch_size=batch_size, **options)
            if progress is not None:
                progress(len(graph.selected_features), len(graph.selected_features))

        return AttributionResult(
            graph=graph,
            phase_seconds={name: phase.wall_s for name, phase in usage.items()},
            batch_size=batch_size,
            threads=used_threads,
            peak_rss_bytes=peak_rss_bytes(),
            phase_usage=usage,
            fast_path=reason is None,
            block_size=block_size,
            peak_device_bytes=(
                torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
            ),
        )


class _Phases:
    """Per-phase usage, synchronising CUDA so GPU work is charged to the phase that queued it."""

    def __init__(self, device: torch.device, verbose: bool) -> None:
        self.device = device
        self.verbose = verbose
        self.usage: dict[str, Usage] = {}
        self._start = self._last = self._now()
        self._name: str | None = None

    def _now(self) -> Snapshot:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return Snapshot.now()

    def start(self, name: str | None) -> None:
        now = self._now()
        if self._name is not None:
            self.usage[self._name] = self._last.until(now)
            if self.verbose:
                # Like circuit-tracer's verbose mode: phase timings on stderr.
                print(f"{self._name}: {self.usage[self._name].wall_s:.2f}s", file=sys.stderr)
        self._name, self._last = name, now

    def finish(self) -> dict[str, Usage]:
        self.start(None)
        self.usage["total"] = self._start.until(self._last)
        return self.usage


def _attribute_fast(
    prompt: str | torch.Tensor,
    model: Any,
    *,
    max_n_logits: int,
    desired_logit_prob: float,
    max_feature_nodes: int | None,
    batch_size: int,
    block_size: int,
    offload: Literal["cpu", "disk"] | None,
    verbose: bool,
    progress: Progress | None,
) -> tuple[Graph, dict[str, Usage]]:
    from circuit_tracer.utils.disk_offload import offload_modules

    offload_handles: list[Callable[[], None]] = []
    try:
        return _run_phases(
            prompt,
            model,
            max_n_logits=max_n_logits,
            desired_logit_prob=desired_logit_prob,
            max_feature_nodes=max_feature_nodes,
            batch_size=batch_size,
            block_size=block_size,
            offload=(
                (lambda modules: offload_handles.extend(offload_modules(modules, offload)))
                if offload
                else None
            ),
            verbose=verbose,
            progress=progress,
        )
    finally:
        for reload_handle in offload_handles:
            reload_handle()


def _run_phases(
    prompt: str | torch.Tensor,
    model: Any,
    *,
    max_n_logits: int,
    desired_logit_prob: float,
    max_feature_nodes: int | None,
    batch_size: int,
    block_size: int,
    offload: Callable[[list], None] | None,
    verbose: bool,
    progress: Progress | None,
) -> tuple[Graph, dict[str, Usage]]:
    """circuit-tracer 0.5.0's ``_run_attribution``, phase for phase, with explicit row blocks."""
    from circuit_tracer.attribution.targets import AttributionTargets
    from circuit_tracer.graph import compute_partial_influences

    from tracerflow.attribution.linear_backward import LinearBackward, forward_cache_hooks

    device = torch.device(model.cfg.device)
    phases = _Phases(device, verbose)

    phases.start("precompute")
    input_ids = model.ensure_tokenized(prompt)
    # The patterns and norm scales the frozen backward needs come from the same (batch 1)
    # forward pass circuit-tracer runs to find the active features.
    forward_cache, cache_hooks = forward_cache_hooks(model.cfg.n_layers)
    with model.hooks(fwd_hooks=cache_hooks):
        ctx = model.setup_attribution(input_ids)
    activation_matrix = ctx.activation_matrix
    if offload:
        offload(model.get_offload_targets_phase0())

    # circuit-tracer runs a batch_size-row forward pass here to build an autograd graph;
    # the explicit backward needs only the weights it reads.
    phases.start("forward")
    backward = LinearBackward(model, ctx, forward_cache)
    ctx.decoder_vecs = None  # type: ignore[assignment]  # packed into backward: free a copy
    if offload:
        offload(model.get_offload_targets_phase1())

    phases.start("inputs")
    feat_layers, feat_pos, _ = activation_matrix.indices()
    n_layers, n_pos, _ = activation_matrix.shape
    total_active_feats = activation_matrix._nnz()
    targets = AttributionTargets(
        attribution_targets=None,
        logits=ctx.logits[0, -1],
        unembed_proj=model.unembed_proj,
        tokenizer=model.tokenizer,
        max_n_logits=max_n_logits,
        desired_logit_prob=desired_logit_prob,
    )
    if offload:
        offload(model.get_offload_targets_phase2())
    logit_offset = len(feat_layers) + (n_layers + 1) * n_pos
    n_logits = len(targets)
    total_nodes = logit_offset + n_logits
    max_feature_nodes = min(max_feature_nodes or total_active_feats, total_active_feats)
    edge_matrix = torch.zeros(max_feature_nodes + n_logits, total_nodes)
    row_to_node_index = torch.zeros(max_feature_nodes + n_logits, dtype=torch.int32)

    phases.start("logits")
    for i in range(0, n_logits, block_size):
        batch = targets.logit_vectors[i : i + block_size]
        rows = backward.rows(
            layers=torch.full((batch.shape[0],), n_layers),
            positions=torch.full((batch.shape[0],), n_pos - 1),
            inject_values=batch,
        )
        edge_matrix[i : i + batch.shape[0], :logit_offset] = rows.cpu()
        row_to_node_index[i : i + batch.shape[0]] = (
            torch.arange(i, i + batch.shape[0]) + logit_offset
        )

    phases.start("features")
    st = n_logits
    visited = torch.zeros(total_active_feats, dtype=torch.bool)
    n_visited = 0
    # Rows do not depend on which other rows share their block, so each queue is computed in
    # (layer, position) order — the order that lets a block skip layers and positions — and
    # written where circuit-tracer writes it.
    source_order_key = (feat_layers * n_pos + feat_pos).cpu()
    while n_visited < max_feature_nodes:
        if max_feature_nodes == total_active_feats:
            pending = torch.arange(total_active_feats)
        else:
            influences = compute_partial_influences(
                edge_matrix[:st], targets.logit_probabilities, row_to_node_index[:st]
            )
            feature_rank = torch.argsort(influences[:total_active_feats], descending=True).cpu()
            queue_size = min(4 * batch_size, max_feature_nodes - n_visited)
            pending = feature_rank[~visited[feature_rank]][:queue_size]

        order = torch.argsort(source_order_key[pending], stable=True)
        for start in range(0, len(pending), block_size):
            slots = order[start : start + block_size]
            idx_batch = pending[slots]
            layers, positions = feat_layers[idx_batch], feat_pos[idx_batch]
            rows = backward.rows(layers, positions, ctx.encoder_vecs[idx_batch])
            edge_matrix[st + slots, :logit_offset] = rows.cpu()
            n_visited += len(idx_batch)
            if progress is not None:
                progress(n_visited, max_feature_nodes)
        row_to_node_index[st : st + len(pending)] = pending.to(torch.int32)
        visited[pending] = True
        st += len(pending)

    phases.start("package")
    selected_features = torch.where(visited)[0]
    if max_feature_nodes < total_active_feats:
        non_feature_nodes = torch.arange(total_active_feats, total_nodes)
        col_read = torch.cat([selected_features, non_feature_nodes])
        edge_matrix = edge_matrix[:, col_read]
    edge_matrix = edge_matrix[row_to_node_index.argsort()]
    final_node_count = edge_matrix.shape[1]
    full_edge_matrix = torch.zeros(final_node_count, final_node_count)
    full_edge_matrix[:max_feature_nodes] = edge_matrix[:max_feature_nodes]
    full_edge_matrix[-n_logits:] = edge_matrix[max_feature_nodes:]
    del edge_matrix

    graph = Graph(
        input_string=model.tokenizer.decode(input_ids),
        input_tokens=input_ids,
        logit_targets=targets.logit_targets,
        logit_probabilities=targets.logit_probabilities,
        vocab_size=targets.vocab_size,
        active_features=activation_matrix.indices().T,
        activation_values=activation_matrix.values(),
        selected_features=selected_features,
        adjacency_matrix=full_edge_matrix,
        cfg=model.model_config,
        scan=model.scan,
    )
    return graph, phases.finish()
