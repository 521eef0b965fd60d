"""Rows store paths relative to their roots and the views give them absolute (issue 26, part 8):
the rule in Python, the migration of older rows, and the views under moved roots."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import duckdb
import pytest

from tracerflow.storage.database import _insert_run, open_database, reading
from tracerflow.storage.migrations import MIGRATIONS, apply_migrations
from tracerflow.storage.paths import PathRoots, resolved_path, set_roots, stored_path

from .builders import IOI_PROMPTS, run_info, score, transcoder

# The migration that made paths relative, found by its name (its number is given at merge).
RELATIVE_PATHS = next(m for m in MIGRATIONS if m.name.startswith("paths relative to their roots"))


ROOT = "/home/u/.tracerflow/artifacts"


@pytest.mark.parametrize(
    ("path", "stored"),
    [
        (f"{ROOT}/attribute/k/graph.safetensors", "attribute/k/graph.safetensors"),
        (f"{ROOT}-old/attribute/k/graph.safetensors", None),  # beside the root, not under it
        ("/elsewhere/graph.safetensors", None),
        (None, None),
    ],
)
def test_a_path_is_stored_relative_to_its_root_only_when_it_lies_under_it(
    path: str | None, stored: str | None
) -> None:
    assert stored_path(path, Path(ROOT)) == (path if stored is None else stored)


def test_the_views_and_python_resolve_a_stored_path_alike() -> None:
    root = Path("/moved/artifacts")
    con = duckdb.connect()
    apply_migrations(con)
    set_roots(con, PathRoots(home=Path("/moved"), artifact_root=root))
    for stored, resolved in [
        ("attribute/k/graph.safetensors", "/moved/artifacts/attribute/k/graph.safetensors"),
        ("/elsewhere/graph.safetensors", "/elsewhere/graph.safetensors"),
        (None, None),
    ]:
        (in_sql,) = con.execute("SELECT tf_resolved(tf_artifact_root(), ?)", [stored]).fetchone()  # type: ignore[misc]
        assert in_sql == resolved_path(stored, root) == resolved


def test_older_rows_under_the_home_become_relative_and_follow_a_moved_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, moved = tmp_path / "home", tmp_path / "moved"
    monkeypatch.setenv("TRACERFLOW_HOME", str(home))
    db_path = home / "scores.duckdb"
    home.mkdir()
    older = [
        replace(
            score(transcoder(), IOI_PROMPTS[0], 0.7, 0.9),
            graph_path=f"{home}/artifacts/attribute/k/graph.safetensors",
            graph_files_path=f"{home}/graph-files/g.json",
        ),
        replace(  # written where no root is: left absolute
            score(transcoder(), IOI_PROMPTS[1], 0.7, 0.9),
            graph_path="/mnt/shared/attribute/k/graph.safetensors",
            graph_files_path=None,
        ),
    ]
    with duckdb.connect(str(db_path)) as con:  # what the tracerflow before the migration wrote
        apply_migrations(con, up_to=RELATIVE_PATHS.version - 1)
        _insert_run(con, run_info("before"), older)
    open_database(db_path).close()  # the next writer migrates

    with duckdb.connect(str(db_path), read_only=True) as con:
        stored = con.execute(
            "SELECT graph_path, graph_files_path FROM scores ORDER BY 1"
        ).fetchall()
    assert stored == [
        ("/mnt/shared/attribute/k/graph.safetensors", None),
        ("attribute/k/graph.safetensors", "graph-files/g.json"),
    ]
    db_path.parent.rename(moved)
    monkeypatch.setenv("TRACERFLOW_HOME", str(moved))
    with reading(moved / "scores.duckdb") as con:
        wide = con.execute("SELECT graph_path, graph_files_path FROM scores_wide ORDER BY 1")
        assert wide.fetchall() == [
            ("/mnt/shared/attribute/k/graph.safetensors", None),
            (f"{moved}/artifacts/attribute/k/graph.safetensors", f"{moved}/graph-files/g.json"),
        ]
