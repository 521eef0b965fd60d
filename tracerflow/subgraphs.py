"""Subgraph scores: how much of a graph's computation a set of pinned nodes carries.

A subgraph is what a person pins in the viewer (its Save stores ``pinnedIds`` and
``supernodes`` in the view state, ``qParams``), or a JSON file of the same shape. It is scored
with the rule of the pruned scores, kept = the pinned features: every selected feature not
pinned is merged into the error node of its layer and position; tokens, errors and logits are
always kept (docs/metrics.md, "Subgraph scores"; circuit-tracer's PR #42 and Neuronpedia's
subgraph score use the same rule).

The node ids are the viewer's (``tracerflow.viewer.graph_ids``): ``{layer}_{feature}_{pos}``
for a feature, ``err_{layer}_{pos}`` for an error node, ``E_{token}_{pos}`` for a token and
``{n_layers + 1}_{token}_{pos}`` for a logit. Pinning an error, token or logit is allowed and
changes nothing (they are kept anyway); an id that names no node of the graph is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from circuit_tracer.graph import Graph

from tracerflow.errors import UsageError
from tracerflow.machine import torch_threads
from tracerflow.scoring import (
    GraphLayout,
    influence_and_scores,
    kept_features_scores,
    logit_weights,
)
from tracerflow.storage.graphs import load_graph
from tracerflow.storage.store import StoreLike
from tracerflow.storage.subgraphs import (
    SubgraphRecord,
    graph_folder,
    graph_of_slug,
    record_subgraph,
)

_NUMBERED_ID = re.compile(r"(\d+)_(\d+)_(\d+)")
_ERROR_ID = re.compile(r"err_(\d+)_(\d+)")
_TOKEN_ID = re.compile(r"E_(\d+)_(\d+)")


@dataclass(frozen=True)
class PinnedNodes:
    """A subgraph as saved: its node ids (``pinnedIds`` and every supernode's members, sorted,
    without repeats) and its supernodes as given (``[label, id, ...]`` lists)."""

    node_ids: tuple[str, ...]
    supernodes: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class SubgraphScores:
    """The four numbers of a subgraph: the whole graph's replacement and completeness (what
    ``scores.replacement_score``/``completeness_score`` hold) and the subgraph's."""

    graph_replacement: float
    graph_completeness: float
    subgraph_replacement: float
    subgraph_completeness: float
    n_pinned_features: int
    n_selected_features: int


def pinned_nodes(q_params: Any, where: str) -> PinnedNodes:
    """The subgraph in a view state (``qParams``), as the viewer writes it: ``pinnedIds`` a
    comma-separated string or a list of strings, ``supernodes`` a JSON string or a list of
    ``[label, id, ...]`` lists. ``UsageError`` naming ``where`` for any other shape."""
    if not isinstance(q_params, Mapping):
        raise UsageError(f"{where}: not a JSON object of pinnedIds and supernodes")
    ids = _string_list(q_params.get("pinnedIds"), f"{where}: pinnedIds")
    supernodes = _supernodes(q_params.get("supernodes"), f"{where}: supernodes")
    members = [node_id for group in supernodes for node_id in group[1:]]
    node_ids = tuple(sorted({node_id for node_id in [*ids, *members] if node_id}))
    if not node_ids:
        raise UsageError(f"{where}: no pinned node ids (pinnedIds and supernodes are empty)")
    return PinnedNodes(node_ids=node_ids, supernodes=supernodes)


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return [item.strip() for item in value]
    raise UsageError(f"{where}: expected node ids (a comma-separated string or a list)")


def _supernodes(value: Any, where: str) -> tuple[tuple[str, ...], ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise UsageError(f"{where}: not JSON ({error})") from None
    if not isinstance(value, list) or not all(
        isinstance(group, list) and group and all(isinstance(item, str) for item in group)
        for group in value
    ):
        raise UsageError(f"{where}: expected a list of [label, node id, ...] lists")
    return tuple(tuple(group) for group in value)


def pinned_feature_mask(graph: Graph, node_ids: Sequence[str], where: str) -> torch.Tensor:
    """A bool mask over ``graph``'s selected features: True for each pinned feature. Ids of
    errors, tokens and logits are checked and leave the mask as it is; an id that names no node
    of ``graph`` is a ``UsageError`` naming it (and ``where``)."""
    layout = GraphLayout.of(graph)
    selected = graph.active_features[graph.selected_features]  # (layer, pos, feature) rows
    rows = {tuple(row): index for index, row in enumerate(selected.tolist())}
    mask = torch.zeros(layout.n_features, dtype=torch.bool)
    for node_id in node_ids:
        row = _feature_row(graph, layout, rows, node_id)
        if row is None:
            raise UsageError(
                f"{where}: node id {node_id!r} is not a node of this graph (features "
                "'{layer}_{feature}_{pos}', errors 'err_{layer}_{pos}', tokens "
                "'E_{token}_{pos}', logits '{n_layers+1}_{token}_{pos}')"
            )
        if row >= 0:
            mask[row] = True
    return mask


def _feature_row(
    graph: Graph, layout: GraphLayout, rows: Mapping[tuple[int, ...], int], node_id: str
) -> int | None:
    """The selected-feature row ``node_id`` names; -1 for a valid non-feature node; None for an
    id that names nothing in ``graph``."""
    if match := _ERROR_ID.fullmatch(node_id):
        layer, pos = map(int, match.groups())
        return -1 if layer < layout.n_layers and pos < layout.n_pos else None
    if match := _TOKEN_ID.fullmatch(node_id):
        token, pos = map(int, match.groups())
        valid = pos < layout.n_pos and int(graph.input_tokens[pos]) == token
        return -1 if valid else None
    match = _NUMBERED_ID.fullmatch(node_id)
    if match is None:
        return None
    first, second, pos = map(int, match.groups())
    if first == layout.n_layers + 1:  # a logit: {n_layers + 1}_{vocab index}_{last position}
        targets = {int(target.vocab_idx) for target in graph.logit_targets}
        return -1 if second in targets and pos == layout.n_pos - 1 else None
    return rows.get((first, pos, second))


def score_subgraph(graph: Graph, keep_features: torch.Tensor) -> SubgraphScores:
    """The whole graph's scores and those with every selected feature outside ``keep_features``
    merged into its error node, in one N x N working buffer (tracerflow/scoring.py)."""
    layout = GraphLayout.of(graph)
    weights = logit_weights(graph)
    work = torch.empty_like(graph.adjacency_matrix)
    whole = influence_and_scores(graph.adjacency_matrix, layout, weights, work)
    kept = kept_features_scores(graph, keep_features.to(work.device), weights, work)
    return SubgraphScores(
        graph_replacement=whole.replacement,
        graph_completeness=whole.completeness,
        subgraph_replacement=kept.replacement,
        subgraph_completeness=kept.completeness,
        n_pinned_features=int(keep_features.sum()),
        n_selected_features=layout.n_features,
    )


def score_and_record(
    store: StoreLike,
    artifacts_dir: Path,
    slug: str,
    q_params: Any,
    where: str,
    scored_by: str,
) -> SubgraphRecord:
    """Score the subgraph ``q_params`` pins in graph ``slug`` and record it in ``subgraphs``.

    The graph is the one of the slug's newest score row, read from the artifact store (safetensors
    and JSON, never a pickle) and scored at the thread count it was attributed with, so the whole
    graph's numbers equal the recorded ones bit for bit. ``where`` names the input in errors.
    """
    pinned = pinned_nodes(q_params, where)
    scored = graph_of_slug(store, slug)
    graph = load_graph(graph_folder(scored.graph_path, artifacts_dir))
    keep = pinned_feature_mask(graph, pinned.node_ids, where)
    with torch_threads(scored.attribution_threads):
        scores = score_subgraph(graph, keep)
    record = SubgraphRecord(
        score_id=scored.score_id,
        slug=slug,
        pinned_ids=pinned.node_ids,
        supernodes=pinned.supernodes,
        n_pinned_features=scores.n_pinned_features,
        n_selected_features=scores.n_selected_features,
        graph_replacement_score=scores.graph_replacement,
        graph_completeness_score=scores.graph_completeness,
        subgraph_replacement_score=scores.subgraph_replacement,
        subgraph_completeness_score=scores.subgraph_completeness,
        scored_by=scored_by,
        created_at=datetime.now(UTC),
    )
    record_subgraph(store, record)
    return record
