"""Stage 6, export: viewer graph files for one graph, published into the home's graph folder.

circuit-tracer's ``create_graph_files`` writes ``<slug>.json`` and read-modify-writes
``graph-metadata.json`` without a lock. We run it into a private artifact folder first, then
publish: copy ``<slug>.json`` into the shared graph-files folder (write to a temp name, rename)
and merge the metadata entry under a file lock, so concurrent flows never lose an entry.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from circuit_tracer.graph import Graph
from filelock import FileLock
from prefect import task

from tracerflow.errors import ConfigError
from tracerflow.storage.artifacts import ArtifactStore, stage_key

CODE_VERSION = "1"
METADATA_FILE = "graph-metadata.json"
_SLUG = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def validate_slug(slug: str) -> str:
    """A slug becomes a file name: letters, digits, '-' and '_' only, 1 to 128 characters."""
    if not _SLUG.match(slug):
        raise ConfigError(
            f"invalid graph slug {slug!r}: use 1-128 letters, digits, '-' or '_' "
            "(no separators, dots or spaces)"
        )
    return slug


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
    from circuit_tracer.utils.create_graph_files import create_graph_files

    validate_slug(slug)
    key = export_key(scores["key"], slug, node_threshold, edge_threshold)
    folder = store.find("export", key)
    if folder is None:
        graph = Graph.from_pt(attribution["graph_path"])
        with store.write("export", key) as tmp_dir:
            create_graph_files(
                graph,
                slug=slug,
                output_path=str(tmp_dir),
                scan=scan,
                node_threshold=node_threshold,
                edge_threshold=edge_threshold,
            )
        folder = store.path("export", key)
    published = publish(folder, slug, Path(graph_files_dir))
    return {"key": key, "slug": slug, "graph_files_path": str(published)}


def publish(export_dir: Path, slug: str, graph_files_dir: Path) -> Path:
    """Copy one exported graph into the shared folder and merge its metadata entry, atomically."""
    graph_files_dir.mkdir(parents=True, exist_ok=True)
    target = graph_files_dir / f"{slug}.json"
    entry = json.loads((export_dir / METADATA_FILE).read_text())["graphs"][0]
    with FileLock(str(graph_files_dir / f".{METADATA_FILE}.lock"), timeout=60):
        tmp = graph_files_dir / f".{slug}.json.tmp"
        shutil.copyfile(export_dir / f"{slug}.json", tmp)
        os.replace(tmp, target)
        metadata_path = graph_files_dir / METADATA_FILE
        metadata = (
            json.loads(metadata_path.read_text()) if metadata_path.exists() else {"graphs": []}
        )
        metadata["graphs"] = [g for g in metadata["graphs"] if g.get("slug") != slug] + [entry]
        tmp_metadata = graph_files_dir / f".{METADATA_FILE}.tmp"
        tmp_metadata.write_text(json.dumps(metadata, indent=2))
        os.replace(tmp_metadata, metadata_path)
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
