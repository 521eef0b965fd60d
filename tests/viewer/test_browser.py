"""The viewer in headless Chromium, with every request that would leave the machine blocked.

Runs the real ``view`` command over a folder of real graphs and a score database, opens the
index and a graph, and checks what a user would see: the graphs and their scores, a drawn
graph, a feature panel that says there are no examples, no request beyond 127.0.0.1 and no
console errors. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.storage.builders import run_info
from tests.viewer.conftest import GRAPH_SPECS, Page, RunningViewer, run_viewer, toy_score
from tracerflow.storage import record_run

pytestmark = pytest.mark.browser

SCORED_SLUG = "toy-clt-ioi"
REPLACEMENT_SCORE = 0.7059
FEATURE_GLYPH = "●"  # utilCg.featureTypeToText of a transcoder feature


@pytest.fixture
def scored_viewer(graph_files_dir: Path) -> Iterator[RunningViewer]:
    db_path = graph_files_dir.parent / "scores.duckdb"
    recorded_at = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    record_run(
        db_path,
        run_info("nightly-1", recorded_at),
        [
            toy_score(SCORED_SLUG, REPLACEMENT_SCORE, 0.9124, recorded_at),
            toy_score("toy-plt-cat", 0.7082, 0.9168, recorded_at),
        ],
    )
    with run_viewer(graph_files_dir, db_path=db_path) as viewer:
        yield viewer


def test_index_lists_graphs_with_scores_and_sorts(
    scored_viewer: RunningViewer, page: Page, artifacts_dir: Path
) -> None:
    page.page.goto(scored_viewer.url)
    rows = page.page.locator("#graphs tbody tr")
    assert rows.count() == len(GRAPH_SPECS)
    scored_row = page.page.locator(f"#graphs tbody tr[data-slug='{SCORED_SLUG}']")
    assert f"{REPLACEMENT_SCORE:.4f}" in scored_row.inner_text()
    assert "0.9124" in scored_row.inner_text()

    # Click "Replacement": ascending, blanks last; click again: descending, blanks still last.
    header = page.page.locator("#graphs th", has_text="Replacement").first
    header.click()
    assert _slugs(rows) == [SCORED_SLUG, "toy-plt-cat", "toy-clt-collide"]
    header.click()
    assert _slugs(rows) == ["toy-plt-cat", SCORED_SLUG, "toy-clt-collide"]
    assert header.get_attribute("aria-sort") == "descending"
    page.page.screenshot(path=str(artifacts_dir / "viewer-index.png"), full_page=True)

    assert page.outside_requests == []
    assert page.console_errors == []


def _slugs(rows: Any) -> list[str]:
    return [row.get_attribute("data-slug") for row in rows.all()]


def test_graph_page_draws_the_graph_offline(
    scored_viewer: RunningViewer, page: Page, artifacts_dir: Path
) -> None:
    page.page.goto(scored_viewer.url)
    page.page.locator(f"#graphs tbody tr[data-slug='{SCORED_SLUG}'] a").click()
    page.page.wait_for_selector(".link-graph text.node", timeout=30_000)

    nodes = page.page.locator(".link-graph text.node")
    assert nodes.count() > 0
    assert page.page.locator(".link-graph canvas").count() > 0
    assert page.page.locator(".link-graph g.prompt-token text").count() > 0  # prompt tokens

    # Hovering loads each node's feature examples: offline that must stay quiet.
    for index in range(min(nodes.count(), 20)):
        nodes.nth(index).hover(force=True)
    # Click a feature node (drawn as a circle glyph): its links draw, the panel fills in.
    feature = page.page.locator(".link-graph text.node", has_text=FEATURE_GLYPH).first
    feature.click(force=True)
    page.page.wait_for_selector(".feature-detail .no-feature-examples", timeout=10_000)
    assert page.page.locator(".node-connections .feature-row").count() > 0
    page.page.screenshot(path=str(artifacts_dir / "viewer-graph.png"))

    assert page.outside_requests == []
    assert page.console_errors == []


def test_every_graph_renders(scored_viewer: RunningViewer, page: Page) -> None:
    for slug in GRAPH_SPECS:
        page.page.goto(f"{scored_viewer.url}graph.html?slug={slug}")
        page.page.wait_for_selector(".link-graph text.node", timeout=30_000)
        assert page.page.locator(".link-graph text.node").count() > 0, slug
    assert page.outside_requests == []
    assert page.console_errors == []


def test_save_button_stores_the_view_state(
    scored_viewer: RunningViewer, page: Page, graph_files_dir: Path
) -> None:
    graph_path = graph_files_dir / f"{SCORED_SLUG}.json"
    page.page.goto(f"{scored_viewer.url}graph.html?slug={SCORED_SLUG}")
    page.page.wait_for_selector(".link-graph text.node", timeout=30_000)
    page.page.locator(".link-graph text.node", has_text=FEATURE_GLYPH).first.click(force=True)
    page.page.locator("button.save-button").click()
    page.page.wait_for_selector("button.save-button:has-text('Saved!')", timeout=10_000)
    saved = json.loads(graph_path.read_text())["qParams"]
    assert saved["clickedId"]
    assert page.outside_requests == []
    assert page.console_errors == []


def test_pinned_nodes_draw_a_subgraph(
    scored_viewer: RunningViewer, page: Page, graph_files_dir: Path
) -> None:
    # The subgraph panel is where dagre and jetpack-lite's div layers and .parent() are used.
    graph = json.loads((graph_files_dir / f"{SCORED_SLUG}.json").read_text())
    pinned = [n["node_id"] for n in graph["nodes"] if n["feature_type"] != "embedding"][:4]
    page.page.goto(f"{scored_viewer.url}graph.html?slug={SCORED_SLUG}&pinnedIds={','.join(pinned)}")
    page.page.wait_for_selector(".subgraph .supernode-container", timeout=30_000)
    assert page.page.locator(".subgraph .supernode-container").count() == len(pinned)
    assert page.page.locator(".subgraph .checkbox-container input").count() == 2
    assert page.outside_requests == []
    assert page.console_errors == []
