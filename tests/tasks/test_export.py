"""The export stage's publishing names the run's feature pack as the graph's scan: the stored
files keep the weights' scan, the published file and its index entry name the pack."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from tracerflow.tasks.export import publish
from tracerflow.viewer.graph_ids import GRAPH_METADATA_FILE

SLUG = "toy-clt-aaaaaaaa-12345678"
WEIGHTS_SCAN = "tracerflow-aaaaaaaaaaaa"


@pytest.fixture
def export_dir(tmp_path: Path) -> Path:
    """A stored export folder as ``write_graph_files`` leaves it, shrunk to what publish reads."""
    folder = tmp_path / "export"
    folder.mkdir()
    metadata = {"slug": SLUG, "scan": WEIGHTS_SCAN, "prompt": "Mary gave"}
    graph = {"metadata": metadata, "nodes": [{"node_id": "1_2_3"}], "links": []}
    (folder / f"{SLUG}.json").write_text(json.dumps(graph, indent=2))
    (folder / GRAPH_METADATA_FILE).write_text(json.dumps({"graphs": [metadata]}))
    return folder


def published(graph_files: Path) -> tuple[str, str]:
    """The published graph file's scan and its index entry's."""
    graph = json.loads((graph_files / f"{SLUG}.json").read_text())
    (entry,) = json.loads((graph_files / GRAPH_METADATA_FILE).read_text())["graphs"]
    return graph["metadata"]["scan"], entry["scan"]


def test_the_published_graph_names_the_runs_pack_and_the_stored_one_is_untouched(
    export_dir: Path, tmp_path: Path
) -> None:
    stored = (export_dir / f"{SLUG}.json").read_bytes()
    graph_files = tmp_path / "graph-files"
    pack = f"{WEIGHTS_SCAN}-11111111"
    publish(export_dir, SLUG, graph_files, feature_pack=pack)
    assert published(graph_files) == (pack, pack)
    graph = json.loads((graph_files / f"{SLUG}.json").read_text())
    assert graph["nodes"] == [{"node_id": "1_2_3"}]  # the rest of the file as stored
    assert (export_dir / f"{SLUG}.json").read_bytes() == stored
    publish(export_dir, SLUG, graph_files)  # no pack named: the stored scan
    assert published(graph_files) == (WEIGHTS_SCAN, WEIGHTS_SCAN)


def test_another_runs_pack_rebinds_quietly_and_damage_still_warns(
    export_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    graph_files = tmp_path / "graph-files"
    first, second = f"{WEIGHTS_SCAN}-11111111", f"{WEIGHTS_SCAN}-22222222"
    publish(export_dir, SLUG, graph_files, feature_pack=first)
    with caplog.at_level(logging.WARNING, logger="tracerflow.tasks.export"):
        _, written = publish(export_dir, SLUG, graph_files, feature_pack=second, announce=True)
        assert written and published(graph_files) == (second, second)
        assert not caplog.records  # another corpus's pack: a new binding, not a repair
        (graph_files / f"{SLUG}.json").write_text("{}")
        publish(export_dir, SLUG, graph_files, feature_pack=second, announce=True)
    assert published(graph_files) == (second, second)
    assert [r.getMessage().split(" from ")[0] for r in caplog.records] == [
        f"restored {graph_files / f'{SLUG}.json'}"
    ]
