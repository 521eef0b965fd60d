"""The graph files ``tracerflow demo`` exports: one per transcoder and prompt, each a graph the
viewer can draw without guessing (unique node ids, every link between nodes of the file).

circuit-tracer's ``create_graph_files`` would give an error node and a layer-0 feature the same
id (``tracerflow.viewer.graph_ids``); the demo exports through ``write_graph_files``, which
names error nodes ``err_{layer}_{pos}``.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.viewer.conftest import DemoScore
from tracerflow.presets import builtin_prompts
from tracerflow.viewer.graph_ids import (
    ERROR_NODE_TYPE,
    GRAPH_METADATA_FILE,
    error_node_id,
    find_node_id_collisions,
)

DEMO_TRANSCODERS = ("toy-clt", "toy-plt")


def test_demo_records_a_graph_per_transcoder_and_prompt(
    demo_home: Path, demo_scores: dict[str, DemoScore]
) -> None:
    expected = {(source, prompt) for source in DEMO_TRANSCODERS for prompt in builtin_prompts()}
    assert len(expected) == 12
    assert {(score.transcoder, score.prompt) for score in demo_scores.values()} == expected
    metadata = json.loads((demo_home / "graph-files" / GRAPH_METADATA_FILE).read_text())
    assert sorted(entry["slug"] for entry in metadata["graphs"]) == sorted(demo_scores)


def test_demo_graph_files_give_every_node_its_own_id(
    demo_home: Path, demo_scores: dict[str, DemoScore]
) -> None:
    for slug in demo_scores:
        graph = json.loads((demo_home / "graph-files" / f"{slug}.json").read_text())
        assert find_node_id_collisions(graph) == {}, slug
        error_nodes = [n for n in graph["nodes"] if n["feature_type"] == ERROR_NODE_TYPE]
        for node in error_nodes:
            assert node["node_id"] == error_node_id(node["layer"], node["ctx_idx"]), slug


def test_every_link_of_a_demo_graph_joins_two_of_its_nodes(
    demo_home: Path, demo_scores: dict[str, DemoScore]
) -> None:
    for slug in demo_scores:
        graph = json.loads((demo_home / "graph-files" / f"{slug}.json").read_text())
        node_ids = {node["node_id"] for node in graph["nodes"]}
        assert graph["links"], slug
        dangling = [link for link in graph["links"] if {link["source"], link["target"]} - node_ids]
        assert dangling == [], slug
