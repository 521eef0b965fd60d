"""Subgraph scores on the demo's real toy graphs (a copy of the shared ``demo_home``): the two
identities, the command line end to end, and ``history --subgraphs`` / ``compare`` reading them."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from circuit_tracer.graph import compute_graph_scores
from typer.testing import CliRunner

from tests.tasks.test_score import reference_prune
from tracerflow.cli import app
from tracerflow.machine import torch_threads
from tracerflow.storage.graphs import load_graph
from tracerflow.storage.subgraphs import graph_folder
from tracerflow.subgraphs import pinned_feature_mask, score_subgraph

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def home(demo_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo's home: subgraphs are recorded into its score store."""
    copy = tmp_path_factory.mktemp("subgraphs") / "home"
    shutil.copytree(demo_home, copy)
    return copy


def recorded_scores(home: Path) -> list[dict[str, object]]:
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        cursor = con.execute(
            "SELECT slug, graph_path, attribution_threads, replacement_score, completeness_score, "
            "pruned_replacement_score, pruned_completeness_score, n_selected_features "
            "FROM scores WHERE status = 'ok' ORDER BY slug"
        )
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def feature_ids_in_graph_file(home: Path, slug: str) -> list[str]:
    graph = json.loads((home / "graph-files" / f"{slug}.json").read_text())
    return [n["node_id"] for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"]


def test_pinning_all_features_or_the_pruned_ones_gives_the_recorded_scores(home: Path) -> None:
    """Every demo graph (toy CLT and PLT, six prompts): pinned = every selected feature gives the
    unpruned scores; pinned = the features of the exported (pruned) graph file, i.e. every
    feature a person can pin in the viewer, gives the pruned scores. Both equal to the last bit:
    the same operations at the thread count the run scored with. (Recording is the command
    line test's: here only the scoring, 24 times.)"""
    rows = recorded_scores(home)
    assert len(rows) == 12
    for row in rows:
        slug = str(row["slug"])
        graph = load_graph(graph_folder(str(row["graph_path"]), home / "artifacts"))
        selected = graph.active_features[graph.selected_features].tolist()
        every = [f"{layer}_{feature}_{pos}" for layer, pos, feature in selected]
        shown = feature_ids_in_graph_file(home, slug)
        with torch_threads(int(str(row["attribution_threads"]))):
            whole = score_subgraph(graph, pinned_feature_mask(graph, every, slug))
            pruned = score_subgraph(graph, pinned_feature_mask(graph, shown, slug))

        recorded = (row["replacement_score"], row["completeness_score"])
        assert (whole.graph_replacement, whole.graph_completeness) == recorded, slug
        assert (whole.subgraph_replacement, whole.subgraph_completeness) == recorded, slug
        assert whole.n_pinned_features == row["n_selected_features"]
        assert (pruned.subgraph_replacement, pruned.subgraph_completeness) == (
            row["pruned_replacement_score"],
            row["pruned_completeness_score"],
        ), slug
        assert 0 < pruned.n_pinned_features == len(shown) < whole.n_pinned_features


def test_subgraph_score_on_the_command_line_records_and_prints_one_row(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    row = next(r for r in recorded_scores(home) if str(r["slug"]).startswith("toy-clt"))
    slug = str(row["slug"])
    features = feature_ids_in_graph_file(home, slug)[:3]
    pins = tmp_path / "pins.json"  # the shape the viewer's Save sends (URL parameters)
    pins.write_text(json.dumps({"pinnedIds": ",".join(features[:2]),
                                "supernodes": json.dumps([["group", features[2]]])}))  # fmt: skip

    done = subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "subgraph", "score", slug, str(pins),
         "--format", "json"],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "TRACERFLOW_HOME": str(home)},
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    (printed,) = json.loads(done.stdout)
    # An independent computation: the features not pinned rerouted into their error nodes one
    # edge at a time (tests/tasks/test_score.py), scored by circuit-tracer's own function.
    graph = load_graph(graph_folder(str(row["graph_path"]), home / "artifacts"))
    selected = graph.active_features[graph.selected_features].tolist()
    keep = [f"{layer}_{feature}_{pos}" in features for layer, pos, feature in selected]
    graph.adjacency_matrix = reference_prune(graph, keep)
    expected = compute_graph_scores(graph)
    assert printed["n_pinned_features"] == 3
    assert printed["subgraph_replacement_score"] == pytest.approx(expected[0], abs=1e-6)
    assert printed["subgraph_completeness_score"] == pytest.approx(expected[1], abs=1e-6)
    assert printed["graph_replacement_score"] == row["replacement_score"]
    assert printed["subgraph_replacement_score"] < printed["graph_replacement_score"]

    # Recorded with the pinned ids, the supernode and the score row; history and compare show it.
    monkeypatch.setenv("TRACERFLOW_HOME", str(home))
    runner = CliRunner()
    history = runner.invoke(app, ["history", "--subgraphs", "--format", "json"])
    assert history.exit_code == 0, history.output
    (saved,) = [r for r in json.loads(history.output) if r["n_pinned_features"] == 3]
    assert json.loads(saved["pinned_ids_json"]) == sorted(features)
    assert json.loads(saved["supernodes_json"]) == [["group", features[2]]]
    assert saved["subgraph_replacement_score"] == printed["subgraph_replacement_score"]
    assert saved["pruned_replacement_score"] == row["pruned_replacement_score"]
    assert (saved["slug"], saved["scored_by"]) == (slug, "cli")
    compare = runner.invoke(app, ["compare", "toy-clt", "toy-plt", "--format", "json"])
    assert compare.exit_code == 0, compare.output
    assert saved["subgraph_id"] in {
        s["subgraph_id"] for s in json.loads(compare.output)["subgraphs"]
    }


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ('{"pinnedIds": "0_99999_0"}', "node id '0_99999_0' is not a node of this graph"),
        ("{not json", "not a JSON file of pinned node ids"),
        ('{"pinnedIds": []}', "no pinned node ids"),
    ],
)
def test_a_bad_pinned_file_is_one_error_line_naming_it(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str, says: str
) -> None:
    slug = str(recorded_scores(home)[0]["slug"])
    pins = tmp_path / "pins.json"
    pins.write_text(content)
    monkeypatch.setenv("TRACERFLOW_HOME", str(home))
    result = CliRunner().invoke(app, ["subgraph", "score", slug, str(pins)])
    assert result.exit_code == 2
    assert result.output.startswith(f"error: {pins}")
    assert says in result.output
    assert result.output.count("\n") == 1


def test_an_unknown_slug_is_one_error_line(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pins = tmp_path / "pins.json"
    pins.write_text('{"pinnedIds": "0_1_1"}')
    monkeypatch.setenv("TRACERFLOW_HOME", str(home))
    result = CliRunner().invoke(app, ["subgraph", "score", "no-such-graph", str(pins)])
    assert result.exit_code == 2
    assert result.output == "error: no graph 'no-such-graph' in the score store " + (
        "(the viewer's index lists them)\n"
    )
