"""The viewer's Save scores the subgraph it pins (issue 28), in headless Chromium on a copy of the
demo's graphs and score store: the status line shows the four numbers, the store records them,
and the index shows the graph's saved subgraph scores."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import duckdb
import pytest

from tests.viewer.conftest import DemoScore, Page, run_viewer
from tests.viewer.test_demo_in_browser import headline_slug

pytestmark = pytest.mark.browser


def test_save_scores_the_pinned_subgraph_and_the_index_shows_it(
    demo_home: Path, demo_scores: dict[str, DemoScore], page: Page, tmp_path: Path,
    artifacts_dir: Path,
) -> None:  # fmt: skip
    home = tmp_path / "home"
    shutil.copytree(demo_home / "graph-files", home / "graph-files")
    shutil.copy(demo_home / "scores.duckdb", home / "scores.duckdb")
    # The graphs Save scores: rows name them relative to the artifact root (this home's).
    shutil.copytree(demo_home / "artifacts" / "attribute", home / "artifacts" / "attribute")
    slug = headline_slug(demo_scores)
    graph = json.loads((home / "graph-files" / f"{slug}.json").read_text())
    # Every feature the viewer shows: the pruned graph's, so the subgraph scores are the
    # recorded pruned scores (docs/metrics.md, "Subgraph scores").
    pinned = [n["node_id"] for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"]
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        pruned = con.execute(
            "SELECT pruned_replacement_score, pruned_completeness_score, replacement_score, "
            "completeness_score FROM scores WHERE slug = ?",
            [slug],
        ).fetchone()
    assert pruned is not None

    with run_viewer(home / "graph-files", db_path=home / "scores.duckdb") as viewer:
        page.page.goto(f"{viewer.url}graph.html?slug={slug}&pinnedIds={','.join(pinned)}")
        page.page.wait_for_selector(".link-graph text.node", timeout=30_000)
        page.page.locator("button.save-button").click()
        status = page.page.locator(".tf-save-status.tf-save-ok")
        status.get_by_text(re.compile("subgraph of")).wait_for(timeout=60_000)
        text = status.inner_text()
        page.page.screenshot(path=str(artifacts_dir / "viewer-subgraph-saved.png"))
        page.page.goto(viewer.url)
        cells = page.page.locator(f"#graphs tr[data-slug='{slug}'] td.score").all_inner_texts()

    replacement, completeness, graph_replacement, graph_completeness = pruned
    assert f"subgraph of {len(pinned)} pinned feature(s)" in text
    assert f"replacement {replacement:.3f}, completeness {completeness:.3f}" in text
    assert f"(graph {graph_replacement:.3f} / {graph_completeness:.3f})" in text
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        recorded = con.execute(
            "SELECT subgraph_replacement_score, subgraph_completeness_score, scored_by, "
            "n_pinned_features FROM subgraphs_wide WHERE slug = ?",
            [slug],
        ).fetchall()
    assert recorded == [(replacement, completeness, "viewer", len(pinned))]
    # The index: four graph scores, then the subgraph's two.
    assert cells[-2:] == [f"{replacement:.4f}", f"{completeness:.4f}"]
    assert page.outside_requests == []
    assert page.console_errors == []
