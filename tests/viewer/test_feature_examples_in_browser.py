"""Feature examples in the graph page, offline, in headless Chromium.

A graph of the notebook prompt on the toy CLT is exported with the transcoder's own scan
(``tracerflow-<hash>``, as the flow writes it); dashboards of the graph's features are computed
on held-out grammar text and published as the flow publishes a pack, a version under
``features/<scan>/`` named by ``CURRENT`` (so the page reads it by version); the real viewer server
serves both on 127.0.0.1. Three feature nodes are clicked: each panel must show the feature's top
examples with highlighted tokens and its top logits, as in the pack, with every non-loopback
request aborted and no console error. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.viewer.conftest import Page, check_clicked_feature_panels, serve_in_thread

pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.browser

PROMPT = "Mary and John went to the store, John gave a drink to"


@pytest.fixture(scope="module")
def graph_with_features(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """(graph-files folder, slug, {feature id: record}) for one toy-CLT graph."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from circuit_tracer import attribute

    from tests.dashboards.conftest import corpus_sequences
    from tracerflow import toy
    from tracerflow.dashboards import (
        cantor_pair,
        collect_dashboards,
        dashboard_records,
        graph_file_features,
        write_feature_pack,
    )
    from tracerflow.dashboards.pack import publish_pack
    from tracerflow.models import load_replacement_model
    from tracerflow.transcoders import convert, load_converted
    from tracerflow.viewer.graph_ids import write_graph_files

    root = tmp_path_factory.mktemp("features-in-browser")
    converted = convert(toy.transcoder_dir("clt"), root / "clt")
    model = load_replacement_model("toy-gpt2", load_converted(converted, "cpu"), "cpu")
    scan = model.transcoders.scan
    graph = attribute(PROMPT, model, max_n_logits=5, batch_size=32)
    graph_dir = root / "graph-files"
    slug = "toy-clt-mary"
    graph_path = write_graph_files(graph, slug, graph_dir, scan=scan, tokenizer=model.tokenizer)
    features = graph_file_features(graph_path)
    assert features and all(0 <= layer < 3 and 0 <= index < 512 for layer, index in features)
    with torch.inference_mode():
        corpus = corpus_sequences(model, 300)
        state = collect_dashboards(model, corpus.split(32), features)
    records = dashboard_records(state, model, scan)
    stored = write_feature_pack(root / "stored", records, model.cfg.n_layers, 512)
    publish_pack(stored, graph_dir / "features" / scan)
    by_id = {cantor_pair(*feature): record for feature, record in records.items()}
    return graph_dir, slug, by_id


@pytest.fixture(scope="module")
def viewer_url(graph_with_features: tuple[Path, str, dict]) -> Iterator[str]:
    with serve_in_thread(graph_with_features[0]) as server:
        yield server.url


def test_clicked_feature_nodes_show_their_examples_and_logits(
    graph_with_features: tuple[Path, str, dict],
    viewer_url: str,
    page: Page,
    artifacts_dir: Path,
) -> None:
    _, slug, records = graph_with_features
    page.page.goto(f"{viewer_url}graph.html?slug={slug}")
    screenshots = [artifacts_dir / f"feature-examples-{n}.png" for n in (1, 2, 3)]
    check_clicked_feature_panels(page, records, screenshots)
    assert page.outside_requests == []
    assert page.console_errors == []


def test_the_transcoder_feature_page_sorts_by_density(
    graph_with_features: tuple[Path, str, dict],
    viewer_url: str,
    page: Page,
    artifacts_dir: Path,
) -> None:
    records = graph_with_features[2]
    page.page.goto(viewer_url)
    page.page.locator("ul.feature-packs a").first.click()
    page.page.wait_for_selector("#features tbody tr")
    density_header = page.page.locator("#features th", has_text="Density")
    density_header.click()  # ascending
    ascending = page.page.locator("#features tbody td:nth-child(4)").evaluate_all(
        "cells => cells.map(c => parseFloat(c.dataset.sort))"
    )
    density_header.click()  # descending
    descending = page.page.locator("#features tbody td:nth-child(4)").evaluate_all(
        "cells => cells.map(c => parseFloat(c.dataset.sort))"
    )
    page.page.screenshot(path=str(artifacts_dir / "feature-page.png"), full_page=True)

    expected = sorted(record["activation_frequency"] for record in records.values())
    assert ascending == expected
    assert descending == expected[::-1]
    assert page.outside_requests == []
    assert page.console_errors == []
