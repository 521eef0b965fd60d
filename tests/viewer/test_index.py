"""The graph index: graph files plus scores from the database, and the page that shows them."""

from __future__ import annotations

import datetime as dt
import json
import sys
import types
from pathlib import Path
from typing import Any

import pytest

from tests.viewer.conftest import GRAPH_SPECS, TOY_MODEL_NAME
from tests.viewer.fake_storage import write_scores_db
from tracerflow.viewer.index import (
    build_graph_index,
    load_db_scores,
    read_graph_metadata,
    render_index_html,
)


def _use_graph_index(monkeypatch: pytest.MonkeyPatch, graph_index: Any) -> None:
    """Stand in for ``tracerflow.storage.queries`` until the storage package lands."""
    queries = types.ModuleType("tracerflow.storage.queries")
    queries.graph_index = graph_index  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tracerflow.storage", types.ModuleType("tracerflow.storage"))
    monkeypatch.setitem(sys.modules, "tracerflow.storage.queries", queries)


def _score_row(slug: str, replacement: float, recorded_at: dt.datetime) -> dict[str, Any]:
    return {
        "slug": slug,
        "transcoder": "db-transcoder",
        "model": "db-model",
        "prompt": "db prompt",
        "replacement_score": replacement,
        "completeness_score": 0.9,
        "pruned_replacement_score": 0.6,
        "pruned_completeness_score": 0.8,
        "recorded_at": recorded_at,
    }


def test_lists_every_graph_from_the_metadata_file(graph_files_dir: Path) -> None:
    slugs = {entry["slug"] for entry in read_graph_metadata(graph_files_dir)}
    assert slugs == set(GRAPH_SPECS)


def test_skips_entries_with_bad_slugs_or_missing_files(graph_files_dir: Path) -> None:
    metadata_path = graph_files_dir / "graph-metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["graphs"] += [{"slug": "../../etc/passwd"}, {"slug": "gone"}, {"slug": None}, "x"]
    metadata_path.write_text(json.dumps(metadata))
    assert {e["slug"] for e in read_graph_metadata(graph_files_dir)} == set(GRAPH_SPECS)


@pytest.mark.parametrize("content", [None, "", "not json", "[]", '{"graphs": 3}'])
def test_missing_or_broken_metadata_means_no_graphs(tmp_path: Path, content: str | None) -> None:
    if content is not None:
        (tmp_path / "graph-metadata.json").write_text(content)
    assert read_graph_metadata(tmp_path) == []


def test_without_a_database_graphs_show_without_scores(graph_files_dir: Path) -> None:
    entries = build_graph_index(graph_files_dir, graph_files_dir / "missing.duckdb")
    assert {e.slug for e in entries} == set(GRAPH_SPECS)
    for entry in entries:
        assert entry.replacement_score is None and entry.completeness_score is None
        assert entry.transcoder in ("toy-clt", "toy-plt")  # the graph's scan
        assert entry.model == TOY_MODEL_NAME
        assert entry.recorded_at is not None  # the file's time
        assert entry.prompt


def test_scores_from_the_database_are_merged_by_slug(
    graph_files_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.viewer.fake_storage import graph_index

    db_path = graph_files_dir.parent / "scores.duckdb"
    when = dt.datetime(2026, 1, 2, 3, 4, tzinfo=dt.UTC)
    write_scores_db(db_path, [_score_row("toy-clt-ioi", 0.7059, when)])
    _use_graph_index(monkeypatch, graph_index)

    entries = {e.slug: e for e in build_graph_index(graph_files_dir, db_path)}
    scored = entries["toy-clt-ioi"]
    assert scored.replacement_score == pytest.approx(0.7059)
    assert scored.completeness_score == pytest.approx(0.9)
    assert scored.pruned_replacement_score == pytest.approx(0.6)
    assert scored.transcoder == "db-transcoder" and scored.model == "db-model"
    assert scored.recorded_at == when
    assert entries["toy-plt-cat"].replacement_score is None


def test_the_latest_row_of_a_slug_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old = _score_row("g", 0.1, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    new = _score_row("g", 0.2, dt.datetime(2026, 2, 1, tzinfo=dt.UTC))
    _use_graph_index(monkeypatch, lambda db_path: [new, old])
    db_path = tmp_path / "scores.duckdb"
    db_path.touch()
    assert load_db_scores(db_path)["g"]["replacement_score"] == 0.2


def test_an_unreadable_database_means_no_scores(
    graph_files_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def locked(db_path: Path) -> list[dict[str, Any]]:
        raise OSError("Could not set lock on file")

    _use_graph_index(monkeypatch, locked)
    db_path = graph_files_dir.parent / "scores.duckdb"
    db_path.touch()
    entries = build_graph_index(graph_files_dir, db_path)
    assert len(entries) == len(GRAPH_SPECS)
    assert all(e.replacement_score is None for e in entries)


def test_index_page_escapes_prompts_and_links_each_graph(graph_files_dir: Path) -> None:
    metadata_path = graph_files_dir / "graph-metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["graphs"][0]["prompt"] = "<img src=x onerror=alert(1)>'"
    metadata_path.write_text(json.dumps(metadata))
    page = render_index_html(build_graph_index(graph_files_dir), graph_files_dir)
    assert "<img" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;&#x27;" in page
    for slug in GRAPH_SPECS:
        assert f"href='/graph.html?slug={slug}'" in page
