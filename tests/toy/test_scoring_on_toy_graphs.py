"""tracerflow/scoring.py on real attribution graphs of the toy presets, against circuit-tracer's
own prune_graph and compute_graph_scores: the same masks and scores, bit for bit."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from circuit_tracer.graph import Graph, compute_graph_scores, prune_graph

from tests.presets import preset_named
from tests.test_scoring import clone_based_merge
from tracerflow import attribution, machine
from tracerflow.models import load_replacement_model
from tracerflow.presets import builtin_prompts
from tracerflow.scoring import prune
from tracerflow.tasks.score import score_graph
from tracerflow.transcoders import load_converted


@pytest.fixture(scope="module", params=["clt", "plt"])
def toy_graph(request: pytest.FixtureRequest, converted_dirs: dict[str, Path]) -> Graph:
    kind = request.param
    preset = preset_named(f"toy-{kind}")
    model = load_replacement_model(preset.model, load_converted(converted_dirs[kind], "cpu"), "cpu")
    params = preset.attribution_params().model_dump()
    return attribution.attribute(builtin_prompts()[0], model, threads=1, **params).graph


def stock_pruned_scores(
    graph: Graph, node_threshold: float, edge_threshold: float
) -> tuple[int, tuple[float, float]]:
    """The pruned scores from circuit-tracer's functions and a cloned adjacency."""
    n_features = len(graph.selected_features)
    keep = prune_graph(graph, node_threshold, edge_threshold).node_mask[:n_features]
    merged = copy.copy(graph)
    merged.adjacency_matrix = clone_based_merge(graph, keep)
    return int(keep.sum()), compute_graph_scores(merged)


@pytest.mark.parametrize("thresholds", [(0.8, 0.98), (0.6, 0.9), (1.0, 1.0)])
def test_prune_is_prune_graph_on_a_toy_graph(
    toy_graph: Graph, thresholds: tuple[float, float]
) -> None:
    with machine.torch_threads(1):
        want = prune_graph(toy_graph, *thresholds)
        got = prune(toy_graph, *thresholds)
    assert torch.equal(got.node_mask, want.node_mask)
    assert torch.equal(got.edge_mask, want.edge_mask)
    assert torch.equal(got.cumulative_scores, want.cumulative_scores)
    assert 0 < int(got.node_mask.sum()) <= len(got.node_mask)


def test_score_graph_is_circuit_tracers_scores_on_a_toy_graph(toy_graph: Graph) -> None:
    with machine.torch_threads(1):
        scores = score_graph(toy_graph, 0.8, 0.98)
        unpruned = compute_graph_scores(toy_graph)
        n_kept, pruned = stock_pruned_scores(toy_graph, 0.8, 0.98)
    assert (scores.replacement_score, scores.completeness_score) == unpruned
    assert (scores.pruned_replacement_score, scores.pruned_completeness_score) == pruned
    assert scores.n_kept_features == n_kept < scores.n_selected_features
