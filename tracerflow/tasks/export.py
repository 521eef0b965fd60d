"""Stage 6, export: viewer graph files for one graph, published into the viewer's folder.

The files (``viewer.graph_ids.write_graph_files``: circuit-tracer's, with unique node ids) are
written into the stage's artifact folder, then published (``viewer.publish``) into the home's
``graph-files/`` or the publish root that several hosts share (``$TRACERFLOW_PUBLISH_ROOT``):
``<slug>.json`` replaced atomically and its ``graph-metadata.json`` entry merged under a file
lock. Each run checks the published copy
against the artifact folder and restores it, with a warning, when it is missing or changed. A
view a person saved in the viewer (``viewer.saved_views``) is part of what is published: a re-run
restores the graph with it, never without it. So is the run's feature pack: the published file's
``metadata.scan`` (and its entry's ``scan``) is the pack of the run's dashboards
(``tasks.dashboards.feature_pack_name``), while the stored files keep the weights' scan, so the
export's key and folder do not depend on the corpus.
"""

from __future__ import annotations

import re
from pathlib import Path

from tracerflow.hashing import sha256_text
from tracerflow.machine import torch_threads
from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.storage.graphs import load_graph
from tracerflow.tasks.results import Attribution, ExportedGraph, ScoredGraph
from tracerflow.tasks.stage import ChunkResults, chunk_task, for_each_prompt
from tracerflow.viewer.graph_ids import write_graph_files
from tracerflow.viewer.publish import publish
from tracerflow.viewer.slugs import validate_slug

CODE_VERSION = "2"


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
