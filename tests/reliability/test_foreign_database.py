"""Read commands never change a DuckDB file tracerflow did not write.

`sql`, `history`, `compare`, `plot history` and the viewer's index, pointed at a foreign
`.duckdb` (no `schema_version` table), refuse it in one line and leave it byte for byte as it
was, with no lock file or WAL beside it. A database an older tracerflow wrote is still migrated.
"""

from __future__ import annotations

import hashlib
import http.client
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from typer.testing import CliRunner

from tracerflow.cli import app
from tracerflow.storage.database import open_reader
from tracerflow.storage.migrations import CURRENT_VERSION, apply_migrations, schema_version
from tracerflow.viewer.server import make_server


@pytest.fixture
def foreign_db(tmp_path: Path) -> Path:
    """Somebody else's DuckDB file, alone in its folder."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = folder / "foreign.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE measurements (id INTEGER, value DOUBLE)")
    con.execute("INSERT INTO measurements VALUES (1, 2.5), (2, 3.5)")
    con.close()
    return path


def folder_state(folder: Path) -> dict[str, str]:
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.iterdir())
    }


READ_COMMANDS = {
    "sql": ["sql", "SELECT * FROM measurements"],
    "history": ["history"],
    "compare": ["compare", "a", "b"],
    "plot history": ["plot", "history", "--out", "{folder}/../history.png"],
}


@pytest.mark.parametrize("command", READ_COMMANDS.values(), ids=READ_COMMANDS.keys())
def test_read_commands_refuse_a_foreign_database_and_leave_it_unchanged(
    foreign_db: Path, command: list[str]
) -> None:
    before = folder_state(foreign_db.parent)
    args = [arg.format(folder=foreign_db.parent) for arg in command]
    result = CliRunner().invoke(app, [*args, "--db", str(foreign_db)])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert str(foreign_db) in lines[0] and "not a tracerflow score database" in lines[0]
    assert folder_state(foreign_db.parent) == before  # no lock file, no WAL, same bytes


def test_the_viewer_index_leaves_a_foreign_database_unchanged(
    foreign_db: Path, tmp_path: Path
) -> None:
    graph_files_dir = tmp_path / "graph-files"
    graph_files_dir.mkdir()
    before = folder_state(foreign_db.parent)
    server = make_server(graph_files_dir, port=0, store=foreign_db)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        connection = http.client.HTTPConnection(str(host), port, timeout=10)
        connection.request("GET", "/")
        response = connection.getresponse()
        response.read()
        connection.close()
    finally:
        server.shutdown()
        server.server_close()
    assert response.status == 200  # the index still lists graphs, without scores
    assert folder_state(foreign_db.parent) == before


@pytest.fixture
def old_tracerflow_db(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "scores.duckdb"
    con = duckdb.connect(str(path))
    apply_migrations(con, up_to=1)
    con.close()
    yield path


def test_an_older_tracerflow_database_is_still_migrated(old_tracerflow_db: Path) -> None:
    con = open_reader(old_tracerflow_db)
    try:
        assert schema_version(con) == CURRENT_VERSION
    finally:
        con.close()
