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


@pytest.fixture
def foreign_db_with_schema_version(foreign_db: Path) -> Path:
    """Another application's database that keeps its own ``schema_version`` table."""
    con = duckdb.connect(str(foreign_db))
    con.execute("CREATE TABLE schema_version (version INTEGER, applied DATE)")
    con.execute("INSERT INTO schema_version VALUES (3, DATE '2026-01-01')")
    con.close()
    return foreign_db


@pytest.mark.parametrize("with_schema_version", [False, True])
def test_a_run_refuses_a_foreign_store_at_once_and_leaves_it_unchanged(
    foreign_db: Path,
    with_schema_version: bool,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`run --store` on another application's DuckDB file: exit 2 before anything starts; its
    tables are never migrated into (before, the run exited 0 having added fifteen tables)."""
    if with_schema_version:
        foreign_db = request.getfixturevalue("foreign_db_with_schema_version")
    before = folder_state(foreign_db.parent)
    monkeypatch.setenv("TRACERFLOW_STORE", str(foreign_db))  # `--store` sets it: undone after
    arguments = ["run", "--preset", "toy-clt", "--prompt", "The cat sat on the"]
    result = CliRunner().invoke(app, [*arguments, "--store", str(foreign_db)])

    assert result.exit_code == 2, result.output
    assert "is not a tracerflow score database (it holds other tables: measurements" in (
        result.output
    )
    assert folder_state(foreign_db.parent) == before


def test_writes_refuse_a_foreign_database_and_leave_it_unchanged(
    foreign_db_with_schema_version: Path,
) -> None:
    from tracerflow.errors import StorageError
    from tracerflow.storage.database import open_database

    before = duckdb.connect(str(foreign_db_with_schema_version), read_only=True)
    tables_before = before.execute("SHOW TABLES").fetchall()
    before.close()
    with pytest.raises(StorageError, match="not a tracerflow score database"):
        open_database(foreign_db_with_schema_version)
    with pytest.raises(StorageError, match="not a tracerflow score database"):
        open_reader(foreign_db_with_schema_version)  # no migration tried, though it has a version
    after = duckdb.connect(str(foreign_db_with_schema_version), read_only=True)
    assert after.execute("SHOW TABLES").fetchall() == tables_before
    after.close()


@pytest.mark.parametrize("kind", ["text", "directory", "newer"])
def test_a_run_refuses_a_store_it_could_not_record_into_at_once(
    kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "scores.duckdb"
    monkeypatch.setenv("TRACERFLOW_STORE", str(store))  # `--store` sets it: undone after
    expected = {
        "text": "is not a readable DuckDB database",
        "directory": "is a folder, not a .duckdb file",
        "newer": f"is at schema version {CURRENT_VERSION + 1}, newer than this tracerflow",
    }[kind]
    if kind == "text":
        store.write_text("not a database")
    elif kind == "directory":
        store.mkdir()
    else:
        con = duckdb.connect(str(store))
        apply_migrations(con)
        con.execute("INSERT INTO schema_version VALUES (?, 'future', now())", [CURRENT_VERSION + 1])
        con.close()
    arguments = ["run", "--preset", "toy-clt", "--prompt", "The cat sat on the"]
    result = CliRunner().invoke(app, [*arguments, "--store", str(store)])

    assert result.exit_code == 2, result.output
    assert expected in result.output and len(result.output.strip().splitlines()) == 1
