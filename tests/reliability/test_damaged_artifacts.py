"""Whatever is missing, cut short, overwritten or edited in a home is recomputed, with a warning
that names it, and the run's ok row reproduces from its files."""

from __future__ import annotations

import json
import logging
import re
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from tests.reliability.harness import (
    PROMPTS,
    Row,
    assert_reproduces,
    damage,
    run,
    stage_folder,
)
from tracerflow.fsutil import SUCCESS_MARKER

DAMAGES = ["truncated", "deleted", "random"]


@pytest.fixture(scope="module")
def scored_once(tmp_path_factory: pytest.TempPathFactory, prefect_api: None) -> tuple[Path, Row]:
    """A home where the toy CLT scored one prompt, and its row; scored once for the module."""
    home = tmp_path_factory.mktemp("scored") / "home"
    with pytest.MonkeyPatch.context() as monkeypatch:
        (row,) = run(home, PROMPTS[:1], monkeypatch).values()
    return home, row


@pytest.fixture
def scored(scored_once: tuple[Path, Row], tmp_path: Path) -> tuple[Path, Row]:
    """A copy of that home for this test to damage, and the row with its paths in the copy (a
    copied home never reads the one it was copied from: test_moved_home.py)."""
    original, row = scored_once
    home = tmp_path / "home"
    shutil.copytree(original, home, symlinks=True)
    into_original = [p for p in home.rglob("*") if p.resolve().is_relative_to(original)]
    assert not into_original, "damaging the copy would damage the module's home"

    def moved(path: str | None) -> str | None:
        return None if path is None else str(home / Path(path).relative_to(original))

    return home, replace(
        row, graph_path=moved(row.graph_path), graph_files_path=moved(row.graph_files_path)
    )


def rerun(home: Path, monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="tracerflow"):
        (row,) = run(home, PROMPTS[:1], monkeypatch).values()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    return row, warnings


def warned_about(warnings: list[str], path: Path) -> bool:
    return any(str(path) in warning for warning in warnings)


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_graph_is_recomputed(scored, how, monkeypatch, caplog):
    home, row = scored
    damage(Path(row.graph_path), how)
    again, warnings = rerun(home, monkeypatch, caplog)
    assert warned_about(warnings, Path(row.graph_path).parent), warnings
    assert again.scores == row.scores
    assert_reproduces(again, home)


@pytest.mark.parametrize("how", [*DAMAGES, "edited"])
def test_damaged_scores_are_recomputed(scored, how, monkeypatch, caplog):
    home, row = scored
    scores_file = stage_folder(home, "score") / "scores.json"
    if how == "edited":
        scores = json.loads(scores_file.read_text())
        scores["replacement_score"] = 0.999
        scores_file.write_text(json.dumps(scores))
    else:
        damage(scores_file, how)
    again, warnings = rerun(home, monkeypatch, caplog)
    assert warned_about(warnings, scores_file.parent), warnings
    assert again.scores == row.scores
    assert_reproduces(again, home)


def test_a_folder_without_its_marker_does_not_exist(scored, monkeypatch, caplog):
    home, row = scored
    folder = Path(row.graph_path).parent
    (folder / SUCCESS_MARKER).unlink()
    again, warnings = rerun(home, monkeypatch, caplog)
    assert warned_about(warnings, folder), warnings
    assert (folder / SUCCESS_MARKER).is_file()
    assert_reproduces(again, home)


@pytest.mark.parametrize("how", DAMAGES)
def test_a_damaged_published_graph_file_is_restored(scored, how, monkeypatch, caplog):
    home, row = scored
    published = Path(row.graph_files_path)
    exported = stage_folder(home, "export") / published.name
    damage(published, how)
    again, warnings = rerun(home, monkeypatch, caplog)
    assert warned_about(warnings, published), warnings
    restored, stored = json.loads(published.read_text()), json.loads(exported.read_text())
    # Published, the graph names the run's feature pack: the weights' scan and its inputs' id.
    weights_scan = stored["metadata"]["scan"]
    assert re.fullmatch(f"{weights_scan}-[0-9a-f]{{8}}", restored["metadata"]["scan"])
    restored["metadata"]["scan"] = weights_scan
    assert restored == stored
    assert_reproduces(again, home)


def test_a_lost_viewer_index_entry_is_restored(scored, monkeypatch, caplog):
    home, row = scored
    metadata_file = Path(row.graph_files_path).parent / "graph-metadata.json"
    metadata_file.write_text(json.dumps({"graphs": []}))
    again, warnings = rerun(home, monkeypatch, caplog)
    assert warned_about(warnings, metadata_file), warnings
    slugs = [graph["slug"] for graph in json.loads(metadata_file.read_text())["graphs"]]
    assert slugs == [row.slug]
    assert_reproduces(again, home)


def test_a_damaged_viewer_index_is_rebuilt_with_the_entry(scored, monkeypatch, caplog):
    home, row = scored
    metadata_file = Path(row.graph_files_path).parent / "graph-metadata.json"
    damage(metadata_file, "random")
    again, warnings = rerun(home, monkeypatch, caplog)
    assert warned_about(warnings, metadata_file), warnings
    slugs = [graph["slug"] for graph in json.loads(metadata_file.read_text())["graphs"]]
    assert slugs == [row.slug]
    assert_reproduces(again, home)
