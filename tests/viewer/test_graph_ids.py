"""Node ids in exported graph files: circuit-tracer's collision, and the export that avoids it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.viewer.conftest import ToyGraphs
from tracerflow.viewer.graph_ids import (
    ERROR_NODE_TYPE,
    GRAPH_METADATA_FILE,
    error_node_id,
    find_node_id_collisions,
    write_graph_files,
)
from tracerflow.viewer.slugs import InvalidSlugError

COLLIDING = "toy-clt-collide"


@pytest.fixture(scope="module")
def upstream_and_ours(
    toy_graphs_built: ToyGraphs, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict, dict]:
    """The colliding graph exported by circuit-tracer and by ``write_graph_files``."""
    from circuit_tracer.utils import create_graph_files

    graph = toy_graphs_built.graphs[COLLIDING]
    upstream_dir = tmp_path_factory.mktemp("upstream")
    create_graph_files(graph, COLLIDING, str(upstream_dir), scan="toy-clt")
    ours_path = write_graph_files(graph, COLLIDING, tmp_path_factory.mktemp("ours"), scan="toy-clt")
    upstream = json.loads((upstream_dir / f"{COLLIDING}.json").read_text())
    return upstream, json.loads(ours_path.read_text())


def test_circuit_tracer_export_gives_error_nodes_and_layer0_features_the_same_id(
    upstream_and_ours: tuple[dict, dict],
) -> None:
    upstream, _ = upstream_and_ours
    collisions = find_node_id_collisions(upstream)
    assert collisions, "circuit-tracer no longer collides: write_graph_files may be retired"
    for node_id in collisions:
        kinds = {n["feature_type"] for n in upstream["nodes"] if n["node_id"] == node_id}
        assert kinds == {ERROR_NODE_TYPE, "cross layer transcoder"}


def test_write_graph_files_gives_every_node_its_own_id(
    upstream_and_ours: tuple[dict, dict],
) -> None:
    upstream, ours = upstream_and_ours
    assert find_node_id_collisions(ours) == {}
    assert len(ours["nodes"]) == len(upstream["nodes"])
    error_nodes = [n for n in ours["nodes"] if n["feature_type"] == ERROR_NODE_TYPE]
    assert error_nodes
    for node in error_nodes:
        assert node["node_id"] == error_node_id(node["layer"], node["ctx_idx"])


def test_write_graph_files_keeps_every_link_on_its_own_nodes(
    upstream_and_ours: tuple[dict, dict],
) -> None:
    upstream, ours = upstream_and_ours
    ids = {n["node_id"] for n in ours["nodes"]}
    assert all(link["source"] in ids and link["target"] in ids for link in ours["links"])
    # Same pruning, same link order: each link is upstream's, its error-node end renamed.
    assert len(ours["links"]) == len(upstream["links"])
    error_nodes = {n["node_id"]: n for n in ours["nodes"] if n["feature_type"] == ERROR_NODE_TYPE}
    for our_link, upstream_link in zip(ours["links"], upstream["links"], strict=True):
        assert our_link["weight"] == upstream_link["weight"]
        for end in ("source", "target"):
            node = error_nodes.get(our_link[end])
            if node is None:
                assert our_link[end] == upstream_link[end]
            else:  # circuit-tracer's id for the same error node
                assert upstream_link[end] == f"0_{node['layer']}_{node['ctx_idx']}"


def test_error_nodes_only_send_links(upstream_and_ours: tuple[dict, dict]) -> None:
    # Why the collision cannot be repaired from a written file: a colliding id as a link's
    # source could be either node. (As a target it is always the feature.)
    _, ours = upstream_and_ours
    targets = {link["target"] for link in ours["links"]}
    assert not any(node_id.startswith("err_") for node_id in targets)


def test_write_graph_files_adds_one_metadata_entry_per_slug(
    toy_graphs_built: ToyGraphs, tmp_path: Path
) -> None:
    graph = toy_graphs_built.graphs["toy-clt-ioi"]
    write_graph_files(graph, "g", tmp_path, scan="toy-clt", extra_metadata={"model": "m1"})
    write_graph_files(graph, "h", tmp_path, scan="toy-clt")
    write_graph_files(graph, "g", tmp_path, scan="toy-clt", extra_metadata={"model": "m2"})
    entries = json.loads((tmp_path / GRAPH_METADATA_FILE).read_text())["graphs"]
    assert [e["slug"] for e in entries] == ["h", "g"]
    assert entries[1]["model"] == "m2"
    assert entries[1]["scan"] == "toy-clt"
    assert entries[1]["node_threshold"] == 0.8


@pytest.mark.parametrize("slug", ["../escape", "a/b", "", "x.json"])
def test_write_graph_files_refuses_bad_slugs_and_writes_nothing(
    toy_graphs_built: ToyGraphs, tmp_path: Path, slug: str
) -> None:
    graph_files_dir = tmp_path / "graph-files"
    with pytest.raises(InvalidSlugError):
        write_graph_files(
            graph_files_dir=graph_files_dir,
            graph=toy_graphs_built.graphs["toy-clt-ioi"],
            slug=slug,
            scan="toy",
        )
    assert list(tmp_path.iterdir()) == []


def test_find_node_id_collisions_reads_a_file(tmp_path: Path) -> None:
    graph_path = tmp_path / "g.json"
    nodes = [{"node_id": "0_1_3"}, {"node_id": "0_1_3"}, {"node_id": "E_5_0"}]
    graph_path.write_text(json.dumps({"nodes": nodes, "links": []}))
    assert find_node_id_collisions(graph_path) == {"0_1_3": 2}
