"""Issue 7's acceptance test: ``tracerflow demo``, then ``tracerflow view``, in a browser.

The demo runs once (``demo_home``: the real command, toy CLT and PLT on the built-in prompts);
the viewer runs as the real command on that home, found through ``$TRACERFLOW_HOME``. Headless
Chromium opens the index and a graph with every request beyond 127.0.0.1 aborted and recorded.
What the index shows is checked against the score database read here, independently of the
viewer; what the graph page draws against the graph file; what a clicked feature's panel shows
(issue 16) against the feature pack the demo's dashboards stage published. Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.viewer.conftest import (
    DemoScore,
    Page,
    RunningViewer,
    check_clicked_feature_panels,
)
from tracerflow.dashboards.pack import cantor_pair, read_feature_pack
from tracerflow.presets import builtin_prompts

pytestmark = pytest.mark.browser


def test_index_lists_every_demo_graph_with_its_recorded_scores(
    demo_viewer: RunningViewer,
    demo_scores: dict[str, DemoScore],
    page: Page,
    artifacts_dir: Path,
) -> None:
    page.page.goto(demo_viewer.url)
    shown = page.page.eval_on_selector_all(
        "#graphs tbody tr",
        """rows => rows.map(row => [
            row.dataset.slug,
            Array.from(row.querySelectorAll('td.score')).map(cell => cell.textContent),
        ])""",
    )
    page.page.screenshot(path=str(artifacts_dir / "demo-index.png"), full_page=True)

    assert len(shown) == len(demo_scores) == 12
    for slug, score_cells in shown:
        score = demo_scores[slug]
        replacement, completeness = score_cells[:2]
        assert replacement == f"{score.replacement_score:.4f}", slug
        assert completeness == f"{score.completeness_score:.4f}", slug
    assert page.outside_requests == []
    assert page.console_errors == []


def headline_slug(demo_scores: dict[str, DemoScore]) -> str:
    """The notebook's prompt ("Mary and John ...") on the toy CLT: the demo's headline graph."""
    (slug,) = (
        score.slug
        for score in demo_scores.values()
        if score.transcoder == "toy-clt" and score.prompt == builtin_prompts()[0]
    )
    return slug


def feature_records(graph_files: Path, slug: str) -> dict[int, dict[str, Any]]:
    """The feature pack records of graph ``slug``'s transcoder, by the graph files' feature id."""
    scan = json.loads((graph_files / f"{slug}.json").read_text())["metadata"]["scan"]
    pack = read_feature_pack(graph_files / "features" / scan)
    return {cantor_pair(*feature): record for feature, record in pack.items()}


def nodes_drawn_by_default(graph: dict[str, Any]) -> set[str]:
    """The node ids the viewer draws before its pruning slider is touched.

    The slider starts at the file's ``node_threshold`` and hides a node whose cumulative
    influence is above it, unless it is an embedding or a logit. circuit-tracer's pruning keeps
    the node whose influence first crosses the threshold, so a file can hold one or two nodes
    the viewer hides at first.
    """
    threshold = graph["metadata"]["node_threshold"]
    return {
        node["node_id"]
        for node in graph["nodes"]
        if node["feature_type"] in ("embedding", "logit") or node["influence"] <= threshold
    }


def test_graph_page_draws_the_nodes_and_tokens_of_the_graph_file(
    demo_viewer: RunningViewer,
    demo_home: Path,
    demo_scores: dict[str, DemoScore],
    page: Page,
    artifacts_dir: Path,
) -> None:
    slug = headline_slug(demo_scores)
    graph = json.loads((demo_home / "graph-files" / f"{slug}.json").read_text())
    expected_ids = nodes_drawn_by_default(graph)

    page.page.goto(demo_viewer.url)
    # The graph's link (the row also links its transcoder's feature page, now the demo has one).
    page.page.locator(f"#graphs tbody tr[data-slug='{slug}'] a[href^='/graph.html']").click()
    page.page.wait_for_selector(".link-graph text.node", timeout=30_000)
    node_glyphs = page.page.locator(".link-graph text.node")
    drawn = node_glyphs.evaluate_all(
        "glyphs => glyphs.map(g => [g.__data__.node_id, g.__data__.feature_type])"
    )
    # Click the logit node: its input links draw and the connections panel lists them.
    logit_index = next(i for i, (_, kind) in enumerate(drawn) if kind == "logit")
    node_glyphs.nth(logit_index).click(force=True)
    page.page.wait_for_selector(".node-connections .feature-row", timeout=10_000)
    page.page.screenshot(path=str(artifacts_dir / "demo-graph.png"))

    assert len(drawn) == len(expected_ids) > 0
    assert {node_id for node_id, _ in drawn} == expected_ids
    assert page.page.locator(".link-graph canvas").count() > 0  # the link layers
    # Its axes: layer labels on the left, no numeric x axis over the token labels.
    assert page.page.locator(".link-graph .x.axis").count() == 0
    # Under the graph, each position with an embedding node is labelled with its token.
    tokens = graph["metadata"]["prompt_tokens"]
    embedded = sorted({n["ctx_idx"] for n in graph["nodes"] if n["feature_type"] == "embedding"})
    token_labels = page.page.locator(".link-graph g.prompt-token text").all_text_contents()
    assert token_labels == [tokens[ctx_idx] for ctx_idx in embedded]
    assert page.outside_requests == []
    assert page.console_errors == []


def test_clicked_demo_feature_nodes_show_their_examples_and_logits(
    demo_viewer: RunningViewer,
    demo_home: Path,
    demo_scores: dict[str, DemoScore],
    page: Page,
    artifacts_dir: Path,
) -> None:
    slug = headline_slug(demo_scores)
    records = feature_records(demo_home / "graph-files", slug)

    page.page.goto(f"{demo_viewer.url}graph.html?slug={slug}")
    screenshots = [artifacts_dir / f"demo-feature-examples-{n}.png" for n in (1, 2, 3)]
    check_clicked_feature_panels(page, records, screenshots)

    assert page.outside_requests == []
    assert page.console_errors == []
