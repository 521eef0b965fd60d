"""The fast path: circuit-tracer 0.5.0's ``_run_attribution``, phase for phase.

    precompute -> forward -> inputs -> logits -> features -> package

Each phase is one function below, in that order. They follow circuit-tracer's phases line for
line except where a block of attribution rows is computed: ``LinearBackward.rows`` instead of a
batch-sized forward pass, autograd and gathering hooks.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import torch

from tracerflow.attribution.resources import Usage, UsageReading

if TYPE_CHECKING:
    from circuit_tracer.graph import Graph

Progress = Callable[[int, int], None]
Offload = Callable[[list[Any]], None]


class _Phases:
    """Per-phase usage, synchronising CUDA so GPU work is charged to the phase that queued it."""

    def __init__(self, device: torch.device, verbose: bool) -> None:
        self.device = device
        self.verbose = verbose
        self.usage: dict[str, Usage] = {}
        self._start = self._last = self._now()
        self._name: str | None = None

    def _now(self) -> UsageReading:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return UsageReading.now()

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


@dataclass
class _EdgeRows:
    """The rows attributed so far.

    Each row holds one target node's edges from every source node (selected-or-not features,
    then errors [layer][position], then tokens); ``node_of_row[row]`` is the target node of the
    ``row``-th row visited: the logits first, then features as they are visited; ``n_rows``
    counts the rows filled.

    Where ``edges`` keeps a row depends on ``by_node``. When every active feature is visited
    (``max_feature_nodes`` does not bind), nothing re-reads the rows before packaging, so
    ``edges`` is the graph's square adjacency matrix itself [n_nodes, n_nodes] and a row lands at
    its node index: packaging then copies nothing (at 256 tokens a copy of that matrix is 10 GB).
    Otherwise ``edges`` [n_features + n_logits, n_nodes] keeps rows in visiting order, which is
    what circuit-tracer's re-ranking reads.
    """

    edges: torch.Tensor
    node_of_row: torch.Tensor
    n_layers: int
    n_pos: int
    n_active: int  # active features (all candidate feature nodes)
    n_features: int  # feature rows to fill: max_feature_nodes, capped at n_active
    n_logits: int
    logit_offset: int  # first logit node: features, then (n_layers + 1) * n_pos error/token nodes
    by_node: bool
    n_rows: int = 0

    def store(self, visit_rows: torch.Tensor, nodes: torch.Tensor, edges: torch.Tensor) -> None:
        """Keep ``edges`` [n, n_sources] as the rows of targets ``nodes``, visited as rows
        ``visit_rows``."""
        self.edges[nodes if self.by_node else visit_rows, : self.logit_offset] = edges.cpu()
        self.node_of_row[visit_rows] = nodes.to(torch.int32)


def run_fast_path(
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
    """The graph and per-phase usage; offloaded modules are reloaded however it ends."""
    phases = _Phases(torch.device(model.cfg.device), verbose)
    with _offloading(offload) as offload_now:
        phases.start("precompute")
        input_ids = model.ensure_tokenized(prompt)
        ctx, backward_cache = _precompute(model, input_ids)
        offload_now(model.get_offload_targets_phase0())

        # circuit-tracer runs a batch_size-row forward pass here to build an autograd graph;
        # the explicit backward needs only the weights it reads.
        phases.start("forward")
        backward = _explicit_backward(model, ctx, backward_cache)
        offload_now(model.get_offload_targets_phase1())

        phases.start("inputs")
        targets = _logit_targets(model, ctx, max_n_logits, desired_logit_prob)
        offload_now(model.get_offload_targets_phase2())
        rows = _allocate_rows(ctx.activation_matrix, len(targets), max_feature_nodes)

        phases.start("logits")
        _attribute_logits(backward, targets, rows, block_size)

        phases.start("features")
        visited = _attribute_features(
            backward, ctx, targets, rows, batch_size, block_size, progress
        )

        phases.start("package")
        graph = _package_graph(model, input_ids, ctx, targets, rows, visited)
        return graph, phases.finish()


@contextlib.contextmanager
def _offloading(offload: Literal["cpu", "disk"] | None) -> Iterator[Offload]:
    """``offload_now(modules)`` moves modules out (with circuit-tracer's ``offload_modules``)
    when ``offload`` is set, else does nothing; everything moved is reloaded at the end."""
    from circuit_tracer.utils.disk_offload import offload_modules

    reload_handles: list[Callable[[], None]] = []

    def offload_now(modules: list[Any]) -> None:
        if offload:
            reload_handles.extend(offload_modules(modules, offload))

    try:
        yield offload_now
    finally:
        for reload_handle in reload_handles:
            reload_handle()


def _precompute(model: Any, input_ids: torch.Tensor) -> tuple[Any, Any]:
    """circuit-tracer's attribution context (active features, encoder/decoder vectors, logits).
    The patterns and norm scales the explicit backward needs come from the same (batch 1)
    forward pass circuit-tracer runs to find the active features."""
    from tracerflow.attribution.linear_backward import forward_cache_hooks, reads_normalized_input

    backward_cache, cache_hooks = forward_cache_hooks(
        model.cfg.n_layers, normalized_input=reads_normalized_input(model)
    )
    with model.hooks(fwd_hooks=cache_hooks):
        ctx = model.setup_attribution(input_ids)
    return ctx, backward_cache


def _explicit_backward(model: Any, ctx: Any, backward_cache: Any) -> Any:
    from tracerflow.attribution.linear_backward import LinearBackward

    backward = LinearBackward(model, ctx, backward_cache)
    ctx.decoder_vecs = None  # packed into the backward: free the context's copy
    return backward


def _logit_targets(model: Any, ctx: Any, max_n_logits: int, desired_logit_prob: float) -> Any:
    from circuit_tracer.attribution.targets import AttributionTargets

    return AttributionTargets(
        attribution_targets=None,
        logits=ctx.logits[0, -1],
        unembed_proj=model.unembed_proj,
        tokenizer=model.tokenizer,
        max_n_logits=max_n_logits,
        desired_logit_prob=desired_logit_prob,
    )


def _allocate_rows(
    activation_matrix: torch.Tensor, n_logits: int, max_feature_nodes: int | None
) -> _EdgeRows:
    n_layers, n_pos, _ = activation_matrix.shape
    n_active = activation_matrix._nnz()
    n_features = min(max_feature_nodes or n_active, n_active)
    logit_offset = n_active + (n_layers + 1) * n_pos
    n_nodes = logit_offset + n_logits
    by_node = n_features == n_active
    return _EdgeRows(
        edges=torch.zeros(n_nodes if by_node else n_features + n_logits, n_nodes),
        node_of_row=torch.zeros(n_features + n_logits, dtype=torch.int32),
        n_layers=n_layers,
        n_pos=n_pos,
        n_active=n_active,
        n_features=n_features,
        n_logits=n_logits,
        logit_offset=logit_offset,
        by_node=by_node,
    )


def _attribute_logits(backward: Any, targets: Any, rows: _EdgeRows, block_size: int) -> None:
    """The logit rows: each logit's direction injected at the last position's residual."""
    for start in range(0, rows.n_logits, block_size):
        block = targets.logit_vectors[start : start + block_size]
        n = block.shape[0]
        edges = backward.rows(
            layers=torch.full((n,), rows.n_layers),
            positions=torch.full((n,), rows.n_pos - 1),
            inject_values=block,
        )
        visit_rows = torch.arange(start, start + n)
        rows.store(visit_rows, visit_rows + rows.logit_offset, edges)
    rows.n_rows = rows.n_logits


def _attribute_features(
    backward: Any,
    ctx: Any,
    targets: Any,
    rows: _EdgeRows,
    batch_size: int,
    block_size: int,
    progress: Progress | None,
) -> torch.Tensor:
    """The feature rows, in circuit-tracer's visiting order; returns the visited-feature mask.

    When ``max_feature_nodes`` binds, features are re-ranked by influence every ``4 *
    batch_size`` rows, as circuit-tracer does. Rows do not depend on which other rows share their
    block, so each queue is computed in (layer, position) order — the order that lets a block
    skip layers and positions — and written where circuit-tracer writes it.
    """
    feat_layers, feat_pos, _ = ctx.activation_matrix.indices()
    source_order_key = (feat_layers * rows.n_pos + feat_pos).cpu()
    visited = torch.zeros(rows.n_active, dtype=torch.bool)
    n_visited = 0
    while n_visited < rows.n_features:
        pending = _next_queue(targets, rows, visited, n_visited, batch_size)
        order = torch.argsort(source_order_key[pending], stable=True)
        for start in range(0, len(pending), block_size):
            slots = order[start : start + block_size]
            features = pending[slots]
            edges = backward.rows(
                feat_layers[features], feat_pos[features], ctx.encoder_vecs[features]
            )
            rows.store(rows.n_rows + slots, features, edges)
            n_visited += len(features)
            if progress is not None:
                progress(n_visited, rows.n_features)
        visited[pending] = True
        rows.n_rows += len(pending)
    return visited


def _next_queue(
    targets: Any, rows: _EdgeRows, visited: torch.Tensor, n_visited: int, batch_size: int
) -> torch.Tensor:
    """The features to visit next: all of them when every active feature is kept, else the most
    influential unvisited ones given the rows so far."""
    from circuit_tracer.graph import compute_partial_influences

    if rows.n_features == rows.n_active:
        return torch.arange(rows.n_active)
    influences = compute_partial_influences(
        rows.edges[: rows.n_rows],
        targets.logit_probabilities,
        rows.node_of_row[: rows.n_rows],
    )
    feature_rank = torch.argsort(influences[: rows.n_active], descending=True).cpu()
    queue_size = min(4 * batch_size, rows.n_features - n_visited)
    return feature_rank[~visited[feature_rank]][:queue_size]


def _package_graph(
    model: Any,
    input_ids: torch.Tensor,
    ctx: Any,
    targets: Any,
    rows: _EdgeRows,
    visited: torch.Tensor,
) -> Graph:
    """circuit-tracer's graph: rows in node order, unselected feature columns dropped, and the
    square adjacency matrix (features, errors, tokens, logits) with empty error/token rows."""
    from circuit_tracer.graph import Graph

    selected_features = torch.where(visited)[0]
    adjacency = _take_adjacency(rows, selected_features)
    activation_matrix = ctx.activation_matrix
    return Graph(
        input_string=model.tokenizer.decode(input_ids),
        input_tokens=input_ids,
        logit_targets=targets.logit_targets,
        logit_probabilities=targets.logit_probabilities,
        vocab_size=targets.vocab_size,
        active_features=activation_matrix.indices().T,
        activation_values=activation_matrix.values(),
        selected_features=selected_features,
        adjacency_matrix=adjacency,
        cfg=model.model_config,
        scan=model.scan,
    )


# Rows gathered per copy when packaging from visiting order: each copy's temporary stays small.
_PACKAGE_CHUNK_ROWS = 1024


def _take_adjacency(rows: _EdgeRows, selected_features: torch.Tensor) -> torch.Tensor:
    """The square adjacency [n_nodes, n_nodes], taking ``rows.edges`` (which it empties).

    Rows kept by node are the matrix already. Rows kept in visiting order are sorted by node,
    with unselected feature columns dropped, a chunk of rows at a time straight into the matrix:
    the buffer and the matrix are the only large tensors alive at once."""
    edges, rows.edges = rows.edges, torch.empty(0)
    if rows.by_node:
        return edges
    non_feature_nodes = torch.arange(rows.n_active, rows.logit_offset + rows.n_logits)
    columns = torch.cat([selected_features, non_feature_nodes])
    n_nodes = len(columns)
    # Targets in node order land in the matrix's first n_features rows (features) and its last
    # n_logits rows (logits); error and token rows stay empty.
    order = rows.node_of_row.argsort()
    matrix_rows = torch.cat(
        [torch.arange(rows.n_features), torch.arange(n_nodes - rows.n_logits, n_nodes)]
    )
    adjacency = torch.zeros(n_nodes, n_nodes)
    for start in range(0, len(order), _PACKAGE_CHUNK_ROWS):
        chunk = slice(start, start + _PACKAGE_CHUNK_ROWS)
        adjacency[matrix_rows[chunk]] = edges[order[chunk]][:, columns]
    return adjacency
