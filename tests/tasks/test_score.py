"""Pruned scores: pruned feature nodes count as error, checked against a loop-by-loop reference."""

from __future__ import annotations

import pytest
import torch
from circuit_tracer.graph import Graph, compute_graph_scores
from transformer_lens import HookedTransformerConfig

from tracerflow.scoring import merge_pruned_features_into_error
from tracerflow.tasks.score import score_graph

N_LAYERS, N_POS = 2, 3


def random_graph(seed: int = 0) -> Graph:
    """A small well-formed graph: 4 selected features, 2x3 errors, 3 tokens, 2 logits."""
    generator = torch.Generator().manual_seed(seed)
    active = torch.tensor([[0, 1, 5], [0, 2, 7], [1, 1, 3], [1, 2, 9]])
    n_features = len(active)
    n_nodes = n_features + N_LAYERS * N_POS + N_POS + 2
    adjacency = torch.randn(n_nodes, n_nodes, generator=generator)
    adjacency[n_features + N_LAYERS * N_POS :] = 0  # tokens and logits...
    adjacency[-2:] = torch.randn(2, n_nodes, generator=generator)  # ...only logits have inputs
    adjacency[:, -2:] = 0  # logits have no outputs
    adjacency[n_features : n_features + N_LAYERS * N_POS] = 0  # errors have no inputs
    cfg = HookedTransformerConfig(
        n_layers=N_LAYERS, d_model=8, n_ctx=8, d_head=4, d_vocab=20, act_fn="relu"
    )
    return Graph(
        input_string="a b c",
        input_tokens=torch.tensor([0, 1, 2]),
        active_features=active,
        adjacency_matrix=adjacency,
        cfg=cfg,
        selected_features=torch.arange(n_features),
        activation_values=torch.ones(n_features),
        logit_targets=[],  # unused by the scores below
        logit_probabilities=torch.tensor([0.7, 0.2]),
        vocab_size=20,
    )


def reference_prune(graph: Graph, keep: list[bool]) -> torch.Tensor:
    """Reroute each pruned feature's outgoing edges to its (layer, pos) error node, one by one."""
    adjacency = graph.adjacency_matrix.clone()
    n_features = len(graph.selected_features)
    for index, kept in enumerate(keep):
        if kept:
            continue
        layer, pos, _ = graph.active_features[graph.selected_features[index]].tolist()
        error = n_features + layer * graph.n_pos + pos
        for target in range(adjacency.shape[0]):
            adjacency[target, error] += adjacency[target, index]
            adjacency[target, index] = 0
        adjacency[index, :] = 0
    return adjacency


def test_pruned_features_are_merged_into_their_error_nodes():
    graph = random_graph()
    graph.logit_targets = [None, None]  # two logits
    keep = torch.tensor([True, False, True, False])
    pruned = merge_pruned_features_into_error(graph, keep, torch.empty_like(graph.adjacency_matrix))
    torch.testing.assert_close(pruned, reference_prune(graph, keep.tolist()))
    assert torch.equal(graph.adjacency_matrix, random_graph().adjacency_matrix), "input unchanged"


def test_keeping_every_node_gives_the_unpruned_scores():
    graph = random_graph(1)
    graph.logit_targets = [None, None]
    scores = score_graph(graph, node_threshold=1.0, edge_threshold=1.0)
    assert (scores.replacement_score, scores.completeness_score) == compute_graph_scores(graph)
    assert scores.pruned_replacement_score == scores.replacement_score
    assert scores.pruned_completeness_score == scores.completeness_score
    assert scores.n_kept_features == 4


def test_pruning_everything_explains_nothing_through_features():
    graph = random_graph(2)
    graph.logit_targets = [None, None]
    unpruned_replacement = compute_graph_scores(graph)[0]
    graph.adjacency_matrix = merge_pruned_features_into_error(
        graph, torch.zeros(4, dtype=torch.bool), torch.empty_like(graph.adjacency_matrix)
    )
    replacement, completeness = compute_graph_scores(graph)
    # With every feature turned into error, tokens reach logits only directly.
    assert replacement <= unpruned_replacement + 1e-6
    assert 0.0 <= completeness <= 1.0


def hand_graph() -> Graph:
    """The smallest graph where pruning matters, small enough to score by hand.

    One layer, one position: features f0 and f1 (both at layer 0, position 0), the error node e,
    the token t and one logit with probability 1. Edges (target <- source: weight):
      f0 <- t: 1, f0 <- e: 1;  f1 <- t: 2;  logit <- f0: 2, logit <- f1: 1, logit <- e: 1.
    """
    f0, f1, e, t, logit = range(5)
    adjacency = torch.zeros(5, 5)
    adjacency[f0, t], adjacency[f0, e], adjacency[f1, t] = 1.0, 1.0, 2.0
    adjacency[logit, f0], adjacency[logit, f1], adjacency[logit, e] = 2.0, 1.0, 1.0
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=8, n_ctx=8, d_head=4, d_vocab=20, act_fn="relu"
    )
    return Graph(
        input_string="t",
        input_tokens=torch.tensor([3]),
        active_features=torch.tensor([[0, 0, 11], [0, 0, 12]]),
        adjacency_matrix=adjacency,
        cfg=cfg,
        selected_features=torch.arange(2),
        activation_values=torch.ones(2),
        logit_targets=[None],
        logit_probabilities=torch.tensor([1.0]),
        vocab_size=20,
    )


def test_pruned_scores_match_the_definition_worked_by_hand():
    """docs/database.md "Pruned scores", worked out on hand_graph.

    Row-normalised |A|: f0 <- t 1/2, e 1/2; f1 <- t 1; logit <- f0 1/2, f1 1/4, e 1/4.
    Unpruned influence on the logit: f0 1/2, f1 1/4, e 1/4 + 1/4, t 1/4 + 1/4.
      replacement = t / (t + e) = (1/2) / (1/2 + 1/2) = 1/2
      completeness = sum(non-error fraction x (influence + logit weight)) / sum(influence + w)
                   = (1/2*1/2 + 1*1/4 + 1*1/2 + 1*1/2 + 3/4*1) / (1/2 + 1/4 + 1/2 + 1/2 + 1) = 9/11
    Node pruning at 0.8 keeps f0 (2/3 of the feature influence) and prunes f1, whose edge to the
    logit moves to e: logit <- f0 1/2, e 1/2. Influence: f0 1/2, e 1/2 + 1/4, t 1/4.
      pruned replacement = (1/4) / (1/4 + 3/4) = 1/4
      pruned completeness = (1/2*1/2 + 1*3/4 + 1*1/4 + 1/2*1) / (1/2 + 3/4 + 1/4 + 1) = 7/10
    Deleting f1 instead (its edges zeroed, not merged) would give 1/3 and 3/4: higher, because
    what f1 carried would no longer count against the graph.
    """
    scores = score_graph(hand_graph(), node_threshold=0.8, edge_threshold=1.0)
    assert scores.n_kept_features == 1
    assert scores.replacement_score == pytest.approx(1 / 2, abs=1e-6)
    assert scores.completeness_score == pytest.approx(9 / 11, abs=1e-6)
    assert scores.pruned_replacement_score == pytest.approx(1 / 4, abs=1e-6)
    assert scores.pruned_completeness_score == pytest.approx(7 / 10, abs=1e-6)


def test_deleting_pruned_features_instead_would_score_higher_by_hand():
    """The other reading of "pruned score" (drop the pruned nodes), worked out in the docstring
    above: 1/3 and 3/4. tracerflow does not report it; this pins the difference down."""
    graph = hand_graph()
    graph.adjacency_matrix[:, 1] = 0  # f1's outgoing edge deleted, not merged into e
    graph.adjacency_matrix[1, :] = 0
    replacement, completeness = compute_graph_scores(graph)
    assert replacement == pytest.approx(1 / 3, abs=1e-6)
    assert completeness == pytest.approx(3 / 4, abs=1e-6)
