"""Unique node ids in exported graph files.

circuit-tracer 0.5.0 names an error node ``0_{layer}_{pos}`` and a feature node
``{layer}_{feature}_{pos}``, so error node (L, p) and layer-0 feature L at p collide, and the
viewer silently merges them. ``write_graph_files`` is circuit-tracer's ``create_graph_files`` with
error nodes named ``err_{layer}_{pos}``; ``find_node_id_collisions`` checks any other file.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from filelock import FileLock

from tracerflow.fsutil import write_text_atomically
from tracerflow.machine import default_device
from tracerflow.viewer.slugs import validate_slug

logger = logging.getLogger(__name__)

if TYPE_CHECKING:
    from circuit_tracer.graph import Graph

GRAPH_METADATA_FILE = "graph-metadata.json"
ERROR_NODE_TYPE = "mlp reconstruction error"


def error_node_id(layer: int | str, pos: int) -> str:
    """The id ``write_graph_files`` gives the error node of ``layer`` at position ``pos``."""
    return f"err_{layer}_{pos}"


def find_node_id_collisions(graph_json: Path | Mapping[str, Any]) -> dict[str, int]:
    """Node ids that occur more than once in a graph file, with how often.

    Args:
        graph_json: the path of a ``<slug>.json`` graph file, or its parsed content.

    Returns:
        ``{node_id: count}`` for every id used by more than one node; empty when all are unique.
    """
    content = (
        json.loads(graph_json.read_text(encoding="utf-8"))
        if isinstance(graph_json, Path)
        else graph_json
    )
    counts = Counter(node["node_id"] for node in content["nodes"])
    return {node_id: count for node_id, count in counts.items() if count > 1}


def write_graph_files(
    graph: Graph,
    slug: str,
    graph_files_dir: Path,
    *,
    scan: str | list[str],
    node_threshold: float = 0.8,
    edge_threshold: float = 0.98,
    tokenizer: Any | None = None,
    extra_metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``<slug>.json`` and its ``graph-metadata.json`` entry, with unique node ids.

    Does what ``circuit_tracer.utils.create_graph_files`` does (same pruning, nodes, links and
    metadata, through its own helpers), except that error nodes are named by
    ``error_node_id``, the slug is validated, files are replaced atomically and the shared
    ``graph-metadata.json`` is updated under a file lock (circuit-tracer read-modify-writes it
    unlocked, so two exports at once can drop a graph from the index).

    Args:
        graph: an attribution graph from ``circuit_tracer.attribute``.
        slug: the graph's name; letters, digits, ``-``, ``_``.
        graph_files_dir: the viewer's data folder; created if missing.
        scan: the transcoder name recorded in the file.
        node_threshold: cumulative-influence threshold for pruning nodes.
        edge_threshold: cumulative-influence threshold for pruning edges.
        tokenizer: decodes the prompt tokens; default ``AutoTokenizer`` of the model's
            ``tokenizer_name``, as circuit-tracer does.
        extra_metadata: more keys for this graph's ``graph-metadata.json`` entry (the viewer
            ignores keys it does not know), e.g. ``{"model": "gpt2"}``.

    Returns:
        The path of the graph file written.
    """
    from circuit_tracer.utils.create_graph_files import (
        build_model,
        create_nodes,
        create_used_nodes_and_edges,
    )

    from tracerflow.scoring import prune  # circuit-tracer's prune_graph, in less memory

    slug = validate_slug(slug)
    graph_files_dir.mkdir(parents=True, exist_ok=True)

    if tokenizer is None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(graph.cfg.tokenizer_name)

    graph.to(default_device())
    node_mask, edge_mask, cumulative_scores = (
        t.cpu() for t in prune(graph, node_threshold, edge_threshold)
    )
    graph.to("cpu")

    nodes = create_nodes(graph, node_mask, tokenizer, cumulative_scores)
    # Rename before the links are made: create_used_nodes_and_edges reads the ids from the
    # node objects (keyed by node index), so every link follows its own node.
    for node in nodes.values():
        if node.feature_type == ERROR_NODE_TYPE:
            node.node_id = error_node_id(node.layer, node.ctx_idx)
            node.jsNodeId = node.node_id
    used_nodes, used_edges = create_used_nodes_and_edges(graph, nodes, edge_mask)
    model = build_model(graph, used_nodes, used_edges, slug, scan, node_threshold, tokenizer)

    graph_path = graph_files_dir / f"{slug}.json"
    write_text_atomically(graph_path, model.model_dump_json(indent=2))
    entry = {**model.metadata.model_dump(), **(extra_metadata or {})}
    add_graph_metadata_entry(graph_files_dir, entry)
    return graph_path


def add_graph_metadata_entry(graph_files_dir: Path, entry: Mapping[str, Any]) -> None:
    """Add or replace (by slug) one graph's entry in ``graph-metadata.json``, under a lock."""
    validate_slug(entry.get("slug"))
    metadata_path = graph_files_dir / GRAPH_METADATA_FILE
    with FileLock(str(metadata_path) + ".lock", timeout=60):
        metadata = {"graphs": []}
        if metadata_path.exists():
            try:
                metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
                if not isinstance(metadata, dict) or not isinstance(metadata["graphs"], list):
                    raise ValueError("no list of graphs")
            except (ValueError, KeyError) as error:  # each graph's next export re-adds its entry
                logger.warning("replacing %s: it is not a graph index (%s)", metadata_path, error)
                metadata = {"graphs": []}
        graphs = [g for g in metadata["graphs"] if g.get("slug") != entry["slug"]]
        metadata["graphs"] = [*graphs, dict(entry)]
        write_text_atomically(metadata_path, json.dumps(metadata, indent=2))
