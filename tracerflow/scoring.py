"""circuit-tracer's graph scores and pruning, in one working copy of the adjacency matrix.

The numbers are circuit-tracer's (``circuit_tracer.graph``): ``compute_graph_scores`` defines the
replacement and completeness scores, ``prune_graph`` which nodes and edges a pruned graph keeps.
tests/test_scoring.py checks the functions here against those. Only the memory differs.

With every active feature kept, a graph's adjacency is a dense N x N float32 matrix: 10.3 GB at
256 tokens (N = 50 812, docs/performance.md). circuit-tracer's functions each allocate |A| and its
row-normalised copy, ``prune_graph`` also a pruned clone, the edge scores, and a sort of all N^2
edge scores with int64 indices: the score stage held seven N x N matrices beside the adjacency at
once (``benchmarks/scoring.py``). Here:

- the adjacency is only read (a graph loaded from safetensors is a private file mapping, whose
  clean pages the kernel may drop and read again);
- one N x N float buffer, ``work``, holds in turn the normalised |A|, the pruned graph's edge
  scores and the graph with pruned features merged into error;
- one N x N bool edge mask;
- the edge scores are sorted in place, in that buffer, to find the edge threshold, and then
  computed again.

Every step applies the same torch operations to the same values as circuit-tracer, so the results
are equal bit for bit (at the same torch thread count).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from circuit_tracer.graph import Graph, PruneResult, compute_influence, find_threshold

# Chunks for the passes that would otherwise allocate N x N temporaries.
COLUMNS_PER_CHUNK = 256
CUMSUM_CHUNK = 1 << 22


@dataclass(frozen=True)
class GraphLayout:
    """Where each kind of node sits in a graph's adjacency (rows: targets, columns: sources):
    selected features, then errors [layer][position], then tokens, then logits."""

    n_features: int
    n_layers: int
    n_pos: int
    n_logits: int

    @classmethod
    def of(cls, graph: Graph) -> GraphLayout:
        return cls(
            n_features=len(graph.selected_features),
            n_layers=int(graph.cfg.n_layers),
            n_pos=len(graph.input_tokens),
            n_logits=len(graph.logit_targets),
        )

    @property
    def error_end(self) -> int:
        return self.n_features + self.n_layers * self.n_pos

    @property
    def token_end(self) -> int:
        return self.error_end + self.n_pos


@dataclass(frozen=True)
class Influence:
    """``compute_graph_scores``'s two scores, and the node influence they come from (which is
    also ``prune_graph``'s node influence: both are ``compute_influence`` of the normalised |A|)."""

    replacement: float
    completeness: float
    node_influence: torch.Tensor


def logit_weights(graph: Graph) -> torch.Tensor:
    """Each node's weight as an output: the logit's probability for logit nodes, else 0."""
    adjacency = graph.adjacency_matrix
    weights = torch.zeros(adjacency.shape[0], device=adjacency.device)
    weights[-len(graph.logit_targets) :] = graph.logit_probabilities
    return weights


def normalize_into(matrix: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """circuit-tracer's ``normalize_matrix`` (|matrix|, each row divided by its sum, at least
    1e-10), written into ``out``; ``out`` may be ``matrix`` itself."""
    torch.abs(matrix, out=out)
    return out.div_(out.sum(dim=1, keepdim=True).clamp(min=1e-10))


def influence_and_scores(
    adjacency: torch.Tensor, layout: GraphLayout, weights: torch.Tensor, work: torch.Tensor
) -> Influence:
    """circuit-tracer's ``compute_graph_scores``, with the normalised |adjacency| in ``work``
    (which may be ``adjacency`` itself, overwritten)."""
    normalized = normalize_into(adjacency, work)
    node_influence = compute_influence(normalized, weights)
    token_influence = node_influence[layout.error_end : layout.token_end].sum()
    error_influence = node_influence[layout.n_features : layout.error_end].sum()
    replacement = token_influence / (token_influence + error_influence)

    non_error_fractions = 1 - normalized[:, layout.n_features : layout.error_end].sum(dim=-1)
    output_influence = node_influence + weights
    completeness = (non_error_fractions * output_influence).sum() / output_influence.sum()
    return Influence(replacement.item(), completeness.item(), node_influence)


def find_threshold_in_place(scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """circuit-tracer's ``find_threshold(scores, threshold)`` for a 1-D ``scores``, which it sorts
    in place (circuit-tracer's allocates the sorted scores, their int64 indices and the running
    sum: five times the input).

    The scores sorted in descending order, the running sum divided by the total: the score at the
    first index where that reaches ``threshold``, or the last score if none does.
    """
    values = sort_descending_(scores)
    total = torch.sum(values)
    # torch's float32 cumsum accumulates in float64 and rounds each running sum to float32; a
    # float64 carry between chunks reproduces it exactly, a chunk at a time.
    carry = torch.zeros((), dtype=torch.float64, device=values.device)
    for start in range(0, len(values), CUMSUM_CHUNK):
        chunk = values[start : start + CUMSUM_CHUNK].double()
        chunk[0] += carry
        running = chunk.cumsum(dim=0)
        carry = running[-1]
        cumulative = running.to(values.dtype) / total
        index = int(torch.searchsorted(cumulative, threshold).item())
        if index < len(cumulative):
            return values[start + index].clone()
    return values[-1].clone()


def sort_descending_(values: torch.Tensor) -> torch.Tensor:
    """``values`` (1-D) sorted in descending order, in place on the CPU (torch.sort would allocate
    the sorted values and int64 indices: three times the input)."""
    if values.device.type != "cpu":
        return torch.sort(values, descending=True).values
    values.neg_()
    values.numpy().sort()
    return values.neg_()


def prune(
    graph: Graph,
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    *,
    work: torch.Tensor | None = None,
    node_influence: torch.Tensor | None = None,
) -> PruneResult:
    """circuit-tracer's ``prune_graph(graph, node_threshold, edge_threshold)``.

    Args:
        graph: the graph to prune; its adjacency is read, not changed.
        node_threshold: keep the nodes that hold this fraction of the total influence.
        edge_threshold: keep the edges that hold this fraction of the total influence.
        work: an N x N buffer like the adjacency, overwritten (default: a new one).
        node_influence: ``influence_and_scores(...).node_influence`` if already computed.
    """
    if not 0.0 <= node_threshold <= 1.0:
        raise ValueError("node_threshold must be between 0.0 and 1.0")
    if not 0.0 <= edge_threshold <= 1.0:
        raise ValueError("edge_threshold must be between 0.0 and 1.0")
    adjacency = graph.adjacency_matrix
    layout = GraphLayout.of(graph)
    weights = logit_weights(graph)
    work = torch.empty_like(adjacency) if work is None else work
    if node_influence is None:
        node_influence = influence_and_scores(adjacency, layout, weights, work).node_influence
    n_kept_always = layout.n_logits + layout.n_pos

    node_mask = node_influence >= find_threshold(node_influence, node_threshold)
    node_mask[-n_kept_always:] = True  # tokens and logits

    # The edge threshold comes from the pruned graph's edge scores sorted, which happens in work;
    # then the edge scores are computed again (the same operations on the same values) to compare.
    pruned_influence = pruned_edge_scores(adjacency, node_mask, weights, work)
    threshold = find_threshold_in_place(work.view(-1), edge_threshold)
    pruned_edge_scores(adjacency, node_mask, weights, work, pruned_influence)
    edge_mask = work >= threshold

    # From here on as prune_graph: drop feature and error nodes left without outgoing edges and
    # features left without incoming ones, and the dropped nodes' edges, until nothing changes
    # (at most n_layers + 1 rounds).
    while True:
        old_node_mask = node_mask.clone()
        node_mask[:-n_kept_always] &= edge_mask[:, :-n_kept_always].any(0)
        node_mask[: layout.n_features] &= edge_mask[: layout.n_features].any(1)
        if torch.equal(node_mask, old_node_mask):
            break
        edge_mask[~node_mask] = False
        edge_mask[:, ~node_mask] = False

    sorted_scores, sorted_indices = torch.sort(node_influence, descending=True)
    cumulative = torch.cumsum(sorted_scores, dim=0) / torch.sum(sorted_scores)
    cumulative_scores = torch.zeros_like(node_influence)
    cumulative_scores[sorted_indices] = cumulative
    return PruneResult(node_mask, edge_mask, cumulative_scores)


def pruned_edge_scores(
    adjacency: torch.Tensor,
    node_mask: torch.Tensor,
    weights: torch.Tensor,
    work: torch.Tensor,
    pruned_influence: torch.Tensor | None = None,
) -> torch.Tensor:
    """``prune_graph``'s edge scores, written into ``work``: the adjacency restricted to the kept
    nodes, normalised, each row times its node's influence in that graph (plus its logit weight),
    which is returned (pass it back to skip computing it again)."""
    work.copy_(adjacency)
    work[~node_mask] = 0
    work[:, ~node_mask] = 0
    normalized = normalize_into(work, work)
    if pruned_influence is None:
        pruned_influence = compute_influence(normalized, weights) + weights
    normalized.mul_(pruned_influence[:, None])
    return pruned_influence


def merge_pruned_features_into_error(
    graph: Graph, keep_features: torch.Tensor, out: torch.Tensor
) -> torch.Tensor:
    """The adjacency with every selected feature not in ``keep_features`` (a bool mask over the
    selected features) merged into the error node at its layer and position, written into
    ``out``: the feature's outgoing edges now leave from that error node, and the feature has no
    edges left (docs/database.md, "The scores, defined")."""
    layout = GraphLayout.of(graph)
    out.copy_(graph.adjacency_matrix)
    pruned = (~keep_features).nonzero().squeeze(1).to(out.device)
    layer_pos = graph.active_features[graph.selected_features[pruned.cpu()]][:, :2]
    error_nodes = (layout.n_features + layer_pos[:, 0] * layout.n_pos + layer_pos[:, 1]).to(
        out.device
    )
    # A chunk of columns at a time (index_add_ adds them in index order either way).
    for start in range(0, len(pruned), COLUMNS_PER_CHUNK):
        columns = pruned[start : start + COLUMNS_PER_CHUNK]
        out.index_add_(1, error_nodes[start : start + COLUMNS_PER_CHUNK], out[:, columns])
    out[:, pruned] = 0
    out[pruned, :] = 0
    return out


def kept_features_scores(
    graph: Graph, keep_features: torch.Tensor, weights: torch.Tensor, work: torch.Tensor
) -> Influence:
    """The scores of ``graph`` with every selected feature outside ``keep_features`` (a bool mask
    over the selected features) merged into its error node, computed in ``work``: the rule of the
    pruned scores (kept = ``prune_graph``'s features) and of subgraph scores (kept = the pinned
    features). Tokens, errors and logits are always kept (docs/database.md, "Pruned scores")."""
    merged = merge_pruned_features_into_error(graph, keep_features, out=work)
    return influence_and_scores(merged, GraphLayout.of(graph), weights, work=merged)
