"""Stage 6, export: viewer graph files for one graph, published into the home's graph folder.

The files are written by ``tracerflow.viewer.graph_ids.write_graph_files``: circuit-tracer's
``create_graph_files`` with unique node ids (circuit-tracer's error-node ids collide with layer-0
feature ids). They go into a private artifact folder first, then are published: ``<slug>.json``
replaced atomically in the shared graph-files folder and its ``graph-metadata.json`` entry merged
under a file lock, so concurrent flows never lose an entry and the viewer never reads half a file.
Pruning for export runs at the thread count the graph was attributed with, like scoring.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from circuit_tracer.graph import Graph
from prefect import task

from tracerflow.attribution import torch_threads
from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.viewer.graph_ids import (
    GRAPH_METADATA_FILE,
    add_graph_metadata_entry,
    write_graph_files,
    write_text_atomically,
)
from tracerflow.viewer.slugs import validate_slug

CODE_VERSION = "2"


def slug_label(text: str) -> str:
    """A readable slug fragment from any text (a source, a preset name)."""
    label = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    return label[-48:] or "graph"


def export_key(score_key: str, slug: str, node_threshold: float, edge_threshold: float) -> str:
    return stage_key(
        "export",
        CODE_VERSION,
        score=score_key,
        slug=slug,
        node_threshold=node_threshold,
        edge_threshold=edge_threshold,
    )


def export_graph(
    attribution: dict[str, Any],
    scores: dict[str, Any],
    slug: str,
    scan: str,
    node_threshold: float,
    edge_threshold: float,
    store: ArtifactStore,
    graph_files_dir: Path,
) -> dict[str, Any]:
    """Create the viewer files of one graph (once) and publish them into ``graph_files_dir``."""
    validate_slug(slug)
    key = export_key(scores["key"], slug, node_threshold, edge_threshold)
    folder = store.find("export", key)
    if folder is None:
        graph = Graph.from_pt(attribution["graph_path"])
        with store.write("export", key) as tmp_dir, torch_threads(attribution.get("threads")):
            write_graph_files(
                graph,
                slug,
                tmp_dir,
                scan=scan,
                node_threshold=node_threshold,
                edge_threshold=edge_threshold,
            )
        folder = store.path("export", key)
    published = publish(folder, slug, Path(graph_files_dir))
    return {"key": key, "slug": slug, "graph_files_path": str(published)}


def publish(export_dir: Path, slug: str, graph_files_dir: Path) -> Path:
    """Copy one exported graph into the shared folder and merge its metadata entry."""
    graph_files_dir.mkdir(parents=True, exist_ok=True)
    target = graph_files_dir / f"{slug}.json"
    write_text_atomically(target, (export_dir / f"{slug}.json").read_text(encoding="utf-8"))
    (entry,) = json.loads((export_dir / GRAPH_METADATA_FILE).read_text())["graphs"]
    add_graph_metadata_entry(graph_files_dir, entry)
    return target


def _cache_key(context: Any, parameters: dict[str, Any]) -> str:
    store: ArtifactStore = parameters["store"]
    key = export_key(
        parameters["scores"]["key"],
        parameters["slug"],
        parameters["node_threshold"],
        parameters["edge_threshold"],
    )
    return store.prefect_result_key("export", key)


@task(name="export", cache_key_fn=_cache_key, result_serializer="json")
def export_task(
    attribution: dict[str, Any],
    scores: dict[str, Any],
    slug: str,
    scan: str,
    node_threshold: float,
    edge_threshold: float,
    store: ArtifactStore,
    graph_files_dir: Path,
) -> dict[str, Any]:
    return export_graph(
        attribution, scores, slug, scan, node_threshold, edge_threshold, store, graph_files_dir
    )
