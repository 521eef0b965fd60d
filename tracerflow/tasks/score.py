"""Stage 5, score: replacement and completeness scores of a graph, unpruned and pruned.

Unpruned: circuit-tracer's ``compute_graph_scores``. Pruned: the same on the graph pruned at the
export thresholds, pruned features counted as error (docs/database.md, "The scores, defined").
Both computed by tracerflow/scoring.py, in one working copy of the adjacency.
Scoring runs at the thread count the graph was attributed with, so a graph's scores are the same
bit for bit in any process.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tracerflow.machine import torch_threads
from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.storage.graphs import load_graph
from tracerflow.tasks.results import Attribution, GraphScores, ScoredGraph, file_text
from tracerflow.tasks.stage import ChunkResults, chunk_task, for_each_prompt

if TYPE_CHECKING:
    from circuit_tracer.graph import Graph

CODE_VERSION = "2"
SCORES_FILE = "scores.json"


def score_graph(graph: Graph, node_threshold: float, edge_threshold: float) -> GraphScores:
    """Unpruned and pruned scores of ``graph``, in one N x N working buffer (tracerflow/scoring.py:
    circuit-tracer's numbers, without its copies of the adjacency)."""
    import torch  # here, not above: a run whose scores are stored needs no torch

    from tracerflow.scoring import (
        GraphLayout,
        influence_and_scores,
        kept_features_scores,
        logit_weights,
        prune,
    )

    layout = GraphLayout.of(graph)
    weights = logit_weights(graph)
    work = torch.empty_like(graph.adjacency_matrix)
    unpruned = influence_and_scores(graph.adjacency_matrix, layout, weights, work)
    node_mask = prune(
        graph, node_threshold, edge_threshold, work=work, node_influence=unpruned.node_influence
    ).node_mask
    keep_features = node_mask[: layout.n_features]
    pruned = kept_features_scores(graph, keep_features, weights, work)
    return GraphScores(
        replacement_score=unpruned.replacement,
        completeness_score=unpruned.completeness,
        pruned_replacement_score=pruned.replacement,
        pruned_completeness_score=pruned.completeness,
        n_active_features=len(graph.active_features),
        n_selected_features=layout.n_features,
        n_kept_features=int(keep_features.sum()),
        n_logits=layout.n_logits,
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

    def write(out_dir: Path) -> None:
        graph = load_graph(Path(attribution.graph_path).parent)
        # The attribution key (part of this one) holds the thread count: run at the same.
        with torch_threads(attribution.stats.threads):
            scores = score_graph(graph, node_threshold, edge_threshold)
        (out_dir / SCORES_FILE).write_text(file_text(scores))

    folder, cached = store.get_or_compute("score", key, write)
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
