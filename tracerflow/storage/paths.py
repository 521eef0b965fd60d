"""Paths in score rows: stored relative to a root, read back absolute.

A row's ``graph_path`` (the attribute stage's ``graph.safetensors``) is stored relative to the
artifact root and its ``graph_files_path`` (the viewer's graph JSON) relative to the home, so a
home moved with ``mv`` keeps every row pointing at its files, and a lake's rows name files that
every host resolves against its own artifact root (a shared folder, mounted anywhere).

The roots are not in the database: each connection tracerflow opens sets them as DuckDB
variables (``set_roots``), from the settings of the process that reads, and the views
(``scores_wide`` and those built on it) join them to the stored paths. A path stored absolute
(rows older than migration 010 outside the roots, or files outside them) is read as it is. A
bare DuckDB session that sets no variable gets the embedded file's own folder as the home and
its ``artifacts/`` as the artifact root, the default layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import duckdb

HOME_VARIABLE = "tracerflow_home"
ARTIFACT_ROOT_VARIABLE = "tracerflow_artifact_root"


@dataclass(frozen=True)
class PathRoots:
    """The folders stored paths are relative to, on this host."""

    home: Path  # graph_files_path
    artifact_root: Path  # graph_path


def current_roots() -> PathRoots:
    """This process's roots, from its settings (``$TRACERFLOW_HOME``,
    ``$TRACERFLOW_ARTIFACT_ROOT``)."""
    from tracerflow.settings import get_settings

    settings = get_settings()
    return PathRoots(home=settings.home, artifact_root=settings.artifacts_dir)


def set_roots(con: duckdb.DuckDBPyConnection, roots: PathRoots | None = None) -> None:
    """Set the variables the views resolve stored paths against (before a connection is locked
    down)."""
    roots = roots or current_roots()
    for name, folder in (
        (HOME_VARIABLE, roots.home),
        (ARTIFACT_ROOT_VARIABLE, roots.artifact_root),
    ):
        con.execute(f"SET VARIABLE {name} = ?", [str(folder)])


def stored_path(path: str | None, root: Path) -> str | None:
    """``path`` as a row stores it: relative to ``root`` (posix separators) when it lies under
    it, otherwise as given (a file outside the root is still found where it is)."""
    if path is None:
        return None
    try:
        return PurePosixPath(Path(path).relative_to(root)).as_posix()
    except ValueError:
        return path


def resolved_path(stored: str | None, root: Path) -> str | None:
    """What the views give for a stored path (the same rule as ``tf_resolved`` in the SQL):
    absolute paths as they are, relative ones under ``root``."""
    if stored is None or stored.startswith("/"):
        return stored
    return str(root / stored)
