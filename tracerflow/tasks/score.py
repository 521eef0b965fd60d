"""Stage 5, score: replacement and completeness scores of a graph, unpruned and pruned.

Unpruned: circuit-tracer's ``compute_graph_scores``. Pruned: the same on the graph pruned at the
export thresholds, pruned features counted as error (docs/database.md, "The scores, defined").
Scoring runs at the thread count the graph was attributed with, so a graph's scores are the same
bit for bit in any process.
"""

from __future__ import annotations

from pathlib import Path

import torch
from circuit_tracer.graph import Graph, compute_graph_scores, prune_graph

from tracerflow.attribution import torch_threads
from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.storage.graphs import load_graph
from tracerflow.tasks.results import Attribution, GraphScores, ScoredGraph, file_text
from tracerflow.tasks.stage import ChunkResults, chunk_task, for_each_prompt

CODE_VERSION = "1"
SCORES_FILE = "scores.json"


def prune_features_into_error(graph: Graph, keep_features: torch.Tensor) -> Graph:
    """A copy of ``graph`` where every selected feature not in ``keep_features`` (a bool mask over
    the selected features) is merged into the error node at its layer and position.

    Node order in the adjacency matrix (rows: targets, columns: sources): selected features, then
    errors [layer][position], then tokens, then logits.
    """
    n_features = len(graph.selected_features)
    n_pos = graph.n_pos
    adjacency = graph.adjacency_matrix.clone()
    pruned = (~keep_features).nonzero().squeeze(1)
    layer_pos = graph.active_features[graph.selected_features[pruned]][:, :2]
    error_nodes = n_features + layer_pos[:, 0] * n_pos + layer_pos[:, 1]
    # Outgoing edges of a pruned feature now leave from its error node...
    adjacency.index_add_(1, error_nodes, adjacency[:, pruned])
    # ...and the feature itself is gone: no edges out, no edges in.
    adjacency[:, pruned] = 0
    adjacency[pruned, :] = 0
    return Graph(
        input_string=graph.input_string,
        input_tokens=graph.input_tokens,
        active_features=graph.active_features,
        adjacency_matrix=adjacency,
        cfg=graph.cfg,
        selected_features=graph.selected_features,
        activation_values=graph.activation_values,
        logit_targets=graph.logit_targets,
        logit_probabilities=graph.logit_probabilities,
        scan=graph.scan,
        vocab_size=graph.vocab_size,
    )


def score_graph(graph: Graph, node_threshold: float, edge_threshold: float) -> GraphScores:
    replacement, completeness = compute_graph_scores(graph)
    n_features = len(graph.selected_features)
    node_mask = prune_graph(graph, node_threshold, edge_threshold).node_mask
    keep_features = node_mask[:n_features]
    pruned_replacement, pruned_completeness = compute_graph_scores(
        prune_features_into_error(graph, keep_features)
    )
    return GraphScores(
        replacement_score=replacement,
        completeness_score=completeness,
        pruned_replacement_score=pruned_replacement,
        pruned_completeness_score=pruned_completeness,
        n_active_features=len(graph.active_features),
        n_selected_features=n_features,
        n_kept_features=int(keep_features.sum()),
        n_logits=len(graph.logit_targets),
        logit_cumulative_prob=float(graph.logit_probabilities.sum()),
        n_pos=int(graph.n_pos),
    )


def score_key(attribution_key: str, node_threshold: float, edge_threshold: float) -> str:
    return stage_key(
        "score",
        CODE_VERSION,
        graph=attribution_key,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
    )


def score_attribution(
    attribution: Attribution, node_threshold: float, edge_threshold: float, store: ArtifactStore
) -> ScoredGraph:
    key = score_key(attribution.key, node_threshold, edge_threshold)
    folder = store.find("score", key)
    cached = folder is not None
    if folder is None:
        graph = load_graph(Path(attribution.graph_path).parent)
        # The attribution key (part of this one) holds the thread count: run at the same.
        with torch_threads(attribution.stats.threads):
            scores = score_graph(graph, node_threshold, edge_threshold)
        with store.write("score", key) as tmp_dir:
            (tmp_dir / SCORES_FILE).write_text(file_text(scores))
        folder = store.path("score", key)
    scores = GraphScores.model_validate_json((folder / SCORES_FILE).read_text())
    return ScoredGraph(key=key, scores=scores, cached=cached)


@chunk_task("score")
def score_task(
    prompts: list[str],
    attributions: ChunkResults,
    node_threshold: float,
    edge_threshold: float,
    store: ArtifactStore,
) -> ChunkResults:
    """Score a chunk's graphs: each a ``ScoredGraph``, or the ``PromptFailure`` that stopped it."""
    return for_each_prompt(
        "score",
        prompts,
        [(attribution,) for attribution in attributions],
        lambda attribution: score_attribution(attribution, node_threshold, edge_threshold, store),
    )
