"""tracerflow/scoring.py against circuit-tracer's own compute_graph_scores and prune_graph.

The graphs are layered like attribution graphs (edges only from a lower layer to a higher one,
so influence converges), with zeros where circuit-tracer's graphs have them: errors and tokens
have no inputs, logits no outputs, and some features no edges at all.
"""

from __future__ import annotations

import pytest
import torch
from circuit_tracer.graph import (
    Graph,
    compute_graph_scores,
    find_threshold,
    prune_graph,
)
from transformer_lens import HookedTransformerConfig

from tracerflow.scoring import (
    GraphLayout,
    find_threshold_in_place,
    influence_and_scores,
    logit_weights,
    merge_pruned_features_into_error,
    prune,
)


def layered_graph(seed: int, n_layers: int = 3, n_pos: int = 5, per_layer: int = 12) -> Graph:
    """A random graph with circuit-tracer's node order: features (each at a layer and position),
    errors [layer][position], tokens, logits; edges from strictly lower layers only."""
    generator = torch.Generator().manual_seed(seed)
    n_features = n_layers * per_layer
    feature_layer = torch.arange(n_layers).repeat_interleave(per_layer)
    feature_pos = torch.randint(0, n_pos, (n_features,), generator=generator)
    active = torch.stack([feature_layer, feature_pos, torch.arange(n_features)], dim=1)
    n_logits = 3
    # Each node's layer: tokens -1, logits n_layers.
    layer = torch.cat(
        [
            feature_layer,
            torch.arange(n_layers).repeat_interleave(n_pos),
            torch.full((n_pos,), -1),
            torch.full((n_logits,), n_layers),
        ]
    )
    n_nodes = len(layer)
    adjacency = torch.randn(n_nodes, n_nodes, generator=generator) ** 3
    adjacency *= layer[:, None] > layer[None, :]  # target above source
    adjacency[n_features : n_features + n_layers * n_pos] = 0  # errors have no inputs
    silent = torch.randperm(n_features, generator=generator)[:3]
    adjacency[:, silent] = 0  # features that reach nothing
    adjacency *= torch.rand(n_nodes, n_nodes, generator=generator) > 0.3  # sparse-ish
    cfg = HookedTransformerConfig(
        n_layers=n_layers, d_model=8, n_ctx=8, d_head=4, d_vocab=20, act_fn="relu"
    )
    probabilities = torch.rand(n_logits, generator=generator)
    return Graph(
        input_string="a b c d e",
        input_tokens=torch.arange(n_pos),
        active_features=active,
        adjacency_matrix=adjacency,
        cfg=cfg,
        selected_features=torch.arange(n_features),
        activation_values=torch.ones(n_features),
        logit_targets=[None] * n_logits,  # type: ignore[list-item]
        logit_probabilities=probabilities / probabilities.sum() * 0.9,
        vocab_size=20,
    )


def assert_prune_results_equal(graph: Graph, node_threshold: float, edge_threshold: float) -> None:
    want = prune_graph(graph, node_threshold, edge_threshold)
    got = prune(graph, node_threshold, edge_threshold)
    assert torch.equal(got.node_mask, want.node_mask)
    assert torch.equal(got.edge_mask, want.edge_mask)
    assert torch.equal(got.cumulative_scores, want.cumulative_scores)


@pytest.mark.parametrize("seed", range(6))
def test_graph_scores_are_compute_graph_scores_bit_for_bit(seed: int) -> None:
    graph = layered_graph(seed)
    adjacency = graph.adjacency_matrix
    work = torch.empty_like(adjacency)
    scores = influence_and_scores(adjacency, GraphLayout.of(graph), logit_weights(graph), work)
    assert (scores.replacement, scores.completeness) == compute_graph_scores(graph)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("thresholds", [(0.8, 0.98), (0.5, 0.5), (1.0, 1.0), (0.0, 0.0)])
def test_prune_is_prune_graph(seed: int, thresholds: tuple[float, float]) -> None:
    graph = layered_graph(seed)
    before = graph.adjacency_matrix.clone()
    assert_prune_results_equal(graph, *thresholds)
    assert torch.equal(graph.adjacency_matrix, before), "the adjacency is only read"


def test_prune_reuses_a_working_buffer_and_a_known_node_influence() -> None:
    graph = layered_graph(7)
    work = torch.full_like(graph.adjacency_matrix, float("nan"))  # stale content must not matter
    want = prune_graph(graph, 0.8, 0.98)
    got = prune(graph, 0.8, 0.98, work=work)
    assert torch.equal(got.node_mask, want.node_mask)
    assert torch.equal(got.edge_mask, want.edge_mask)


def test_prune_refuses_thresholds_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="node_threshold"):
        prune(layered_graph(0), 1.5, 0.9)
    with pytest.raises(ValueError, match="edge_threshold"):
        prune(layered_graph(0), 0.8, -0.1)


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.9, 0.98, 0.999999, 1.0])
def test_find_threshold_in_place_finds_find_thresholds_value(threshold: float) -> None:
    generator = torch.Generator().manual_seed(3)
    scores = torch.rand(300, 300, generator=generator) ** 4
    scores *= torch.rand(300, 300, generator=generator) > 0.6  # 60 % zeros, as in pruned graphs
    want = find_threshold(scores.flatten(), threshold)
    work = scores.flatten().clone()
    assert find_threshold_in_place(work, threshold) == want
    assert torch.equal(work, torch.sort(scores.flatten(), descending=True).values), "sorted"


def test_find_threshold_in_place_across_cumsum_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """The running sum is carried from chunk to chunk exactly as torch's one cumsum rounds it."""
    import tracerflow.scoring as scoring

    monkeypatch.setattr(scoring, "CUMSUM_CHUNK", 1000)
    generator = torch.Generator().manual_seed(4)
    scores = torch.rand(40_000, generator=generator) ** 8 * 1e4
    scores *= torch.rand(40_000, generator=generator) > 0.5
    for threshold in (0.5, 0.9, 0.99, 0.9999, 1.0):
        want = find_threshold(scores, threshold)
        assert find_threshold_in_place(scores.clone(), threshold) == want


def test_find_threshold_in_place_of_zeros_and_of_no_zeros() -> None:
    assert find_threshold_in_place(torch.zeros(16), 0.9) == 0.0
    full = torch.arange(1.0, 17.0)
    for threshold in (0.0, 0.5, 1.0):
        want = find_threshold(full, threshold)
        assert find_threshold_in_place(full.clone(), threshold) == want


def clone_based_merge(graph: Graph, keep_features: torch.Tensor) -> torch.Tensor:
    """The pruned-into-error adjacency as tracerflow computed it before scoring.py (one
    ``index_add_`` of every pruned column into a clone): the chunked version must equal it."""
    n_features = len(graph.selected_features)
    adjacency = graph.adjacency_matrix.clone()
    pruned = (~keep_features).nonzero().squeeze(1)
    layer_pos = graph.active_features[graph.selected_features[pruned]][:, :2]
    error_nodes = n_features + layer_pos[:, 0] * graph.n_pos + layer_pos[:, 1]
    adjacency.index_add_(1, error_nodes, adjacency[:, pruned])
    adjacency[:, pruned] = 0
    adjacency[pruned, :] = 0
    return adjacency


def test_merging_in_column_chunks_equals_one_index_add(monkeypatch: pytest.MonkeyPatch) -> None:
    import tracerflow.scoring as scoring

    monkeypatch.setattr(scoring, "COLUMNS_PER_CHUNK", 4)  # 36 features: many chunks
    graph = layered_graph(5)
    keep = torch.rand(len(graph.selected_features), generator=torch.Generator().manual_seed(0))
    keep_features = keep > 0.6
    out = torch.empty_like(graph.adjacency_matrix)
    merged = merge_pruned_features_into_error(graph, keep_features, out)
    assert merged is out
    assert torch.equal(merged, clone_based_merge(graph, keep_features))
