"""A home can be moved or copied: what it caches holds no absolute path, so a moved home keeps
working and a copy never reads the home it was copied from."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.reliability.harness import PROMPTS, assert_reproduces, run
from tracerflow.cli import app
from tracerflow.storage.queries import graph_index, run_sql
from tracerflow.viewer.index import build_graph_index


def test_a_moved_home_keeps_working(tmp_path, prefect_api, monkeypatch):
    first, moved = tmp_path / "home", tmp_path / "moved"
    run(first, PROMPTS[:1], monkeypatch)
    shutil.move(first, moved)

    rows = run(moved, PROMPTS, monkeypatch)  # one cached prompt, one new

    assert sorted(rows) == sorted(PROMPTS)
    for row in rows.values():
        assert_reproduces(row, moved)
    assert not first.exists()


def test_a_copied_home_never_reads_the_original(tmp_path, prefect_api, monkeypatch):
    original, copy, aside = tmp_path / "home", tmp_path / "copy", tmp_path / "aside"
    run(original, PROMPTS[:1], monkeypatch)
    subprocess.run(["cp", "-a", str(original), str(copy)], check=True)
    original.rename(aside)  # a read of the original now fails, or recreates it

    rows = run(copy, PROMPTS, monkeypatch)

    for row in rows.values():
        assert_reproduces(row, copy)
    assert not original.exists()


def test_a_home_moved_with_mv_serves_every_graph_and_its_history(
    demo_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rows store their paths relative to the home and the artifact root; the views resolve them
    # under the reader's, so after `mv` every recorded graph is found where the home is now.
    first, moved = tmp_path / "home", tmp_path / "moved"
    shutil.copytree(demo_home, first, symlinks=True)  # the session's demo home stays as it is
    subprocess.run(["mv", str(first), str(moved)], check=True)
    monkeypatch.setenv("TRACERFLOW_HOME", str(moved))
    store = moved / "scores.duckdb"

    graphs = graph_index(store)
    assert graphs
    for graph in graphs:
        assert Path(graph["graph_path"]).is_relative_to(moved / "artifacts")
        assert Path(graph["graph_path"]).is_file()
        assert graph["graph_files_path"] == str(moved / "graph-files" / f"{graph['slug']}.json")
        assert Path(graph["graph_files_path"]).is_file()
    entries = build_graph_index(moved / "graph-files", store)
    assert {entry.slug for entry in entries} == {graph["slug"] for graph in graphs}
    assert all(entry.replacement_score is not None for entry in entries)  # joined by slug

    result = CliRunner().invoke(app, ["history", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)) == len(graphs)
    _, rows = run_sql(store, "SELECT graph_files_path FROM score_history")
    assert sorted(row[0] for row in rows) == sorted(g["graph_files_path"] for g in graphs)
    assert not first.exists()
