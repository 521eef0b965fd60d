"""Issue 26's viewer polish, in headless Chromium on the demo's graphs (``demo_home``).

Save says what happened next to its button; a subgraph node of an unlabelled feature shows the
feature's name; byte-level tokens read as the text they spell; the dropdown, the graph page and
the index name a graph's transcoder by source (and revision), the weights' hash in a tooltip; an
unknown slug gets a page that says so; and the page logs nothing to the console while it loads
and saves. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tests.viewer.conftest import DemoScore, Page, RunningViewer, run_viewer
from tests.viewer.test_demo_in_browser import feature_records, headline_slug
from tracerflow.dashboards.pack import cantor_unpair
from tracerflow.viewer.features import BYTE_ESCAPES, display_token

pytestmark = pytest.mark.browser


@pytest.fixture
def writable_viewer(demo_home: Path, tmp_path: Path) -> Iterator[RunningViewer]:
    """A viewer over a copy of the demo's graphs and score store: Save rewrites files (and
    records the subgraph it pins), the session's stay."""
    graph_files = tmp_path / "home" / "graph-files"
    shutil.copytree(demo_home / "graph-files", graph_files)
    shutil.copy(demo_home / "scores.duckdb", tmp_path / "home" / "scores.duckdb")
    with run_viewer(graph_files, db_path=tmp_path / "home" / "scores.duckdb") as viewer:
        yield viewer


def open_graph(page: Page, viewer: RunningViewer, slug: str, query: str = "") -> None:
    page.page.goto(f"{viewer.url}graph.html?slug={slug}{query}")
    page.page.wait_for_selector(".link-graph text.node", timeout=30_000)


def test_save_says_saved_and_the_page_logs_nothing(
    writable_viewer: RunningViewer,
    demo_scores: dict[str, DemoScore],
    page: Page,
    artifacts_dir: Path,
) -> None:
    logged: list[str] = []
    page.page.on(
        "console",
        lambda message: (
            logged.append(f"{message.type}: {message.text}")
            if message.type in ("log", "debug", "info")
            else None
        ),
    )
    open_graph(page, writable_viewer, headline_slug(demo_scores))
    page.page.locator(".link-graph text.node", has_text="●").first.click(force=True)
    page.page.locator("button.save-button").click()

    status = page.page.locator(".tf-save-status")
    status.get_by_text(re.compile(r"^Saved at ")).wait_for(timeout=10_000)
    assert status.get_attribute("role") == "status"
    page.page.screenshot(path=str(artifacts_dir / "viewer-saved.png"))
    assert logged == []
    assert page.outside_requests == []
    assert page.console_errors == []


def test_a_refused_save_says_why(
    demo_home: Path, demo_scores: dict[str, DemoScore], page: Page
) -> None:
    with run_viewer(demo_home / "graph-files", "--read-only", pass_graph_dir=True) as viewer:
        open_graph(page, viewer, headline_slug(demo_scores))
        page.page.locator("button.save-button").click()
        status = page.page.locator(".tf-save-status.tf-save-failed")
        status.wait_for(timeout=10_000)
        assert status.inner_text() == "Not saved: this viewer is read-only (HTTP 405)"


def test_subgraph_nodes_carry_their_feature_labels(
    demo_viewer: RunningViewer,
    demo_home: Path,
    demo_scores: dict[str, DemoScore],
    page: Page,
    artifacts_dir: Path,
) -> None:
    slug = headline_slug(demo_scores)
    graph = json.loads((demo_home / "graph-files" / f"{slug}.json").read_text())
    features = [n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"][:3]
    assert all(node["clerp"] == "" for node in features)  # nobody labelled them
    pinned = ",".join(node["node_id"] for node in features)
    open_graph(page, demo_viewer, slug, f"&pinnedIds={pinned}")
    page.page.wait_for_selector(".subgraph .supernode-container", timeout=30_000)

    labels = page.page.locator(".subgraph .node-text-container span").all_text_contents()
    # A feature's name as the feature panel titles it: L<layer>/<index in its layer>.
    expected = {f"L{node['layer']}/{cantor_unpair(node['feature'])[1]}" for node in features}
    assert sorted(labels) == sorted(expected)
    # The connections panel of a clicked feature names it the same way.
    page.page.locator(".subgraph .node-text-container span").first.click()
    header = page.page.locator(".node-connections .feature-title").first
    header.wait_for(timeout=10_000)
    assert header.inner_text() in expected
    page.page.screenshot(path=str(artifacts_dir / "viewer-subgraph-labels.png"))
    assert page.console_errors == []


def test_token_strings_are_shown_as_text(demo_viewer: RunningViewer, page: Page) -> None:
    page.page.goto(f"{demo_viewer.url}graph.html?slug=no-graph-needed")
    page.page.wait_for_selector(".tf-unknown-graph", timeout=30_000)
    cases = ["\\xe2\\x80\\x99s", "\\xd2", " caf\\xc3\\xa9", "\x1b", "a\nb", " the"]
    shown = page.page.evaluate("tokens => tokens.map(util.ppToken)", cases)
    assert shown == ["’s", "<0xD2>", " café", "␛", "a⏎b", " the"]
    assert shown == [display_token(token) for token in cases]


def test_byte_level_logits_of_a_feature_read_as_text(
    demo_viewer: RunningViewer,
    demo_home: Path,
    demo_scores: dict[str, DemoScore],
    page: Page,
    artifacts_dir: Path,
) -> None:
    slug = headline_slug(demo_scores)
    records = feature_records(demo_home / "graph-files", slug)
    open_graph(page, demo_viewer, slug)

    glyphs = page.page.locator(".link-graph text.node")
    drawn: list[list[Any]] = glyphs.evaluate_all(
        "glyphs => glyphs.map(g => [g.__data__.feature_type, g.__data__.featureIndex])"
    )
    # A drawn feature whose top or bottom logits hold raw bytes (the toy tokenizer's bytes).
    glyph, record = next(
        (i, records[feature])
        for i, (kind, feature) in enumerate(drawn)
        if kind == "cross layer transcoder"
        and feature in records
        and any(
            BYTE_ESCAPES.search(t)
            for t in records[feature]["top_logits"] + records[feature]["bottom_logits"]
        )
    )
    glyphs.nth(glyph).click(force=True)
    panel = page.page.locator(".feature-detail")
    panel.locator(".feature-title", has_text=f"L{record['layer']}/{record['index']}").wait_for(
        timeout=15_000
    )
    rows = panel.locator(".feature-example-logits .ctx-container")
    rows.first.locator("span.token").first.wait_for(timeout=15_000)
    shown = [row.locator("span.token").all_text_contents() for row in rows.all()]
    page.page.screenshot(path=str(artifacts_dir / "viewer-byte-logits.png"))

    expected = [
        [display_token(t) for t in record["top_logits"]],
        [display_token(t) for t in record["bottom_logits"]],
    ]
    assert shown == expected
    assert not any("\\x" in token for row in shown for token in row)
    assert page.console_errors == []


def test_graphs_are_named_by_source_with_the_hash_in_a_tooltip(
    demo_viewer: RunningViewer,
    demo_home: Path,
    demo_scores: dict[str, DemoScore],
    page: Page,
) -> None:
    slug = headline_slug(demo_scores)
    with duckdb.connect(str(demo_home / "scores.duckdb"), read_only=True) as con:
        ((weights_hash,),) = con.execute(
            "SELECT DISTINCT transcoder_content_hash FROM scores_wide WHERE slug = ?", [slug]
        ).fetchall()
    source = demo_scores[slug].transcoder  # "toy-clt": the demo names no revision

    open_graph(page, demo_viewer, slug)
    option = page.page.locator(f"select.graph-prompt-select option[value='{slug}']")
    assert option.inner_text().startswith(f"{source} — ")
    assert weights_hash[:8] not in option.inner_text()
    assert weights_hash in (option.get_attribute("title") or "")
    name = page.page.locator(".tf-identity .tf-transcoder")
    assert name.inner_text() == source
    assert weights_hash in (name.get_attribute("title") or "")

    page.page.goto(demo_viewer.url)
    cell = page.page.locator(f"#graphs tbody tr[data-slug='{slug}'] span.transcoder")
    assert cell.inner_text() == source
    assert weights_hash in (cell.get_attribute("title") or "")
    pack_link = page.page.locator("ul.feature-packs a", has_text=source)
    assert pack_link.inner_text() == source
    assert "scan " in (pack_link.get_attribute("title") or "")

    # The transcoder's feature page is titled by its source too, its logits readable.
    pack_link.click()
    heading = page.page.locator("h1 span.transcoder")
    assert heading.inner_text() == source
    assert (heading.get_attribute("title") or "").startswith("scan tracerflow-")
    logits = page.page.locator("#features span.token").all_text_contents()
    assert logits and not any("\\x" in token for token in logits)
    assert page.console_errors == []


def test_an_unknown_slug_gets_a_page_that_says_so(
    demo_viewer: RunningViewer, page: Page, artifacts_dir: Path
) -> None:
    page.page.goto(f"{demo_viewer.url}graph.html?slug=no-such-graph")
    message = page.page.locator(".tf-unknown-graph")
    message.wait_for(timeout=30_000)
    assert "No graph named “no-such-graph”" in message.inner_text()
    assert message.locator("a").get_attribute("href") == "/"
    page.page.screenshot(path=str(artifacts_dir / "viewer-unknown-slug.png"))
    assert page.outside_requests == []
    assert page.console_errors == []
