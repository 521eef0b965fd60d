"""Stage 6, export: viewer graph files for one graph, published into the home's graph folder.

The files (``viewer.graph_ids.write_graph_files``: circuit-tracer's, with unique node ids) are
written into the stage's artifact folder, then published: ``<slug>.json`` replaced atomically and
its ``graph-metadata.json`` entry merged under a file lock. Each run checks the published copy
against the artifact folder and restores it, with a warning, when it is missing or changed. A
view a person saved in the viewer (``viewer.saved_views``) is part of what is published: a re-run
restores the graph with it, never without it. So is the run's feature pack: the published file's
``metadata.scan`` (and its entry's ``scan``) is the pack of the run's dashboards
(``tasks.dashboards.feature_pack_name``), while the stored files keep the weights' scan, so the
export's key and folder do not depend on the corpus.
"""

from __future__ import annotations

import functools
import json
import logging
import re
from pathlib import Path
from typing import Any

from tracerflow.attribution import torch_threads
from tracerflow.fsutil import check_no_link_below, write_text_atomically
from tracerflow.hashing import sha256_text
from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.storage.graphs import load_graph
from tracerflow.tasks.results import Attribution, ExportedGraph, ScoredGraph
from tracerflow.tasks.stage import ChunkResults, chunk_task, for_each_prompt
from tracerflow.viewer.graph_ids import (
    GRAPH_METADATA_FILE,
    add_graph_metadata_entry,
    write_graph_files,
)
from tracerflow.viewer.saved_views import graph_text, saved_view, strict_json
from tracerflow.viewer.slugs import validate_slug

CODE_VERSION = "2"
logger = logging.getLogger(__name__)


def slug_label(text: str) -> str:
    """A readable slug fragment from any text (a source, a preset name)."""
    label = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    return label[-48:] or "graph"


def graph_slug(source: str, content_hash: str, prompt: str) -> str:
    """A graph's slug: its source, converted transcoder and prompt, each readable or short."""
    return f"{slug_label(source)}-{content_hash[:8]}-{sha256_text(prompt)[:8]}"


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
    attribution: Attribution,
    scored: ScoredGraph,
    slug: str,
    scan: str,
    node_threshold: float,
    edge_threshold: float,
    store: ArtifactStore,
    graph_files_dir: Path,
    feature_pack: str | None = None,
) -> ExportedGraph:
    """Create the viewer files of one graph (once) and publish them into ``graph_files_dir``,
    naming ``feature_pack`` as the published graph's scan (when given)."""
    validate_slug(slug)
    key = export_key(scored.key, slug, node_threshold, edge_threshold)

    def write(out_dir: Path) -> None:
        graph = load_graph(Path(attribution.graph_path).parent)
        with torch_threads(attribution.stats.threads):
            write_graph_files(
                graph,
                slug,
                out_dir,
                scan=scan,
                node_threshold=node_threshold,
                edge_threshold=edge_threshold,
            )

    folder, cached = store.get_or_compute("export", key, write)
    published, restored = publish(
        folder, slug, Path(graph_files_dir), feature_pack=feature_pack, announce=cached
    )
    return ExportedGraph(
        key=key, slug=slug, graph_files_path=str(published), cached=cached and not restored
    )


def publish(
    export_dir: Path,
    slug: str,
    graph_files_dir: Path,
    *,
    feature_pack: str | None = None,
    announce: bool = False,
) -> tuple[Path, bool]:
    """Make the shared folder's ``<slug>.json`` and metadata entry those of ``export_dir``,
    writing only what is missing or differs; returns the file and whether anything was written.
    ``feature_pack``: the scan they name (else the stored one). ``announce``: warn about each
    repair (the graph was published before, so it was damaged)."""
    graph_files_dir.mkdir(parents=True, exist_ok=True)
    target = graph_files_dir / f"{slug}.json"
    check_no_link_below(graph_files_dir, target)
    check_no_link_below(graph_files_dir, graph_files_dir / GRAPH_METADATA_FILE)
    graph_json = (export_dir / f"{slug}.json").read_text(encoding="utf-8")
    view = saved_view(graph_files_dir, slug)
    (entry,) = json.loads((export_dir / GRAPH_METADATA_FILE).read_text())["graphs"]
    if feature_pack is not None and entry.get("scan") != feature_pack:
        graph = json.loads(graph_json)
        graph["metadata"]["scan"] = entry["scan"] = feature_pack
        graph_json = strict_json(graph)
    if view is not None:
        graph_json = graph_text(json.loads(graph_json), view)
    repairs = []
    published_entry = _published_entry(graph_files_dir, slug)
    # Another run's pack (another corpus, or a graph from before pack names): a new binding,
    # not damage, so no warning.
    rebound = published_entry is not None and published_entry.get("scan") != entry.get("scan")
    if not target.is_file() or target.read_bytes() != graph_json.encode("utf-8"):
        repairs.append(target)
        write_text_atomically(target, graph_json)
    if published_entry != entry:
        repairs.append(graph_files_dir / GRAPH_METADATA_FILE)
        add_graph_metadata_entry(graph_files_dir, entry)
    if announce and not rebound:
        for path in repairs:
            logger.warning("restored %s from %s: it was missing or changed", path, export_dir)
    return target, bool(repairs)


def _published_entry(graph_files_dir: Path, slug: str) -> dict[str, Any] | None:
    """The entry of ``slug`` in the shared ``graph-metadata.json``; None if none or unreadable."""
    metadata_path = graph_files_dir / GRAPH_METADATA_FILE
    try:
        return _published_entries(metadata_path, _file_identity(metadata_path)).get(slug)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _file_identity(path: Path) -> tuple[int, int, int]:
    """What changes when the file is rewritten (atomically: a new inode) or edited in place."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@functools.lru_cache(maxsize=4)
def _published_entries(
    metadata_path: Path, identity: tuple[int, int, int]
) -> dict[str, dict[str, Any]]:
    """Every entry of a ``graph-metadata.json`` by slug, parsed once per version of the file
    (``identity``): a suite's cached re-run checks each of its N graphs against an index of N,
    and parsing the index per graph made that quadratic."""
    entries: dict[str, dict[str, Any]] = {}
    for graph in json.loads(metadata_path.read_text())["graphs"]:
        entries.setdefault(graph.get("slug"), graph)  # the first, as a reader scanning finds it
    return entries


@chunk_task("export")
def export_task(
    prompts: list[str],
    attributions: ChunkResults,
    scored: ChunkResults,
    slugs: list[str],
    scan: str,
    feature_pack: str,
    node_threshold: float,
    edge_threshold: float,
    store: ArtifactStore,
    graph_files_dir: Path,
) -> ChunkResults:
    """Export a chunk's graphs: each an ``ExportedGraph``, or the ``PromptFailure`` that stopped
    it. ``scan``: the weights' (stored files); ``feature_pack``: the published files' scan."""

    def export_one(attribution: Attribution, scores: ScoredGraph, slug: str) -> ExportedGraph:
        return export_graph(
            attribution,
            scores,
            slug,
            scan,
            node_threshold,
            edge_threshold,
            store,
            graph_files_dir,
            feature_pack,
        )

    return for_each_prompt(
        "export", prompts, list(zip(attributions, scored, slugs, strict=True)), export_one
    )
