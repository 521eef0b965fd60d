"""Publishing a graph into the viewer's folder: the home's ``graph-files/`` or a publish root
(``$TRACERFLOW_PUBLISH_ROOT``) that workers on several hosts share.

``publish`` makes the folder's ``<slug>.json`` and its ``graph-metadata.json`` entry those of an
export folder of the artifact store. The graph file is replaced atomically (a rename: readers on
any host see the old file or the new one). The index is one file that every writer
read-modify-writes under an OS lock beside it (``graph_ids.add_graph_metadata_entry``:
``filelock``'s ``fcntl.flock``, its lock file kept in place so every waiter locks the same
inode), so two workers publishing at once never drop each other's entries. Why one locked file
and not one entry file per graph merged at read time: the viewer reads the index on every page,
and one file is one read however many graphs there are (on a network mount, a file per graph is
a round trip per graph); measured here, 2 processes x 200 adds took 4.7 s locked and lost 98 of
400 entries unlocked (docs/operations.md). Stdlib and ``filelock`` only: a publisher (a worker,
a test) needs neither torch nor Prefect.
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

from tracerflow.fsutil import check_no_link_below, write_text_atomically
from tracerflow.viewer.graph_ids import GRAPH_METADATA_FILE, add_graph_metadata_entry
from tracerflow.viewer.saved_views import graph_text, saved_view, strict_json

logger = logging.getLogger(__name__)


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
