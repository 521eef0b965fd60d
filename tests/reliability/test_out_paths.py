"""Every ``--out`` (``sql``, ``plot history``, ``plot metrics``) refuses, in one line with exit 2
and before it computes anything, what it must not write: the score database through a symlink,
a special file, a file that exists (without ``--force``), a folder that does not exist; and
what it writes, it writes whole (a temporary file renamed onto the name)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracerflow.cli import app
from tracerflow.storage.database import open_database

COMMANDS = {
    "sql": ["sql", "SELECT 1 AS one", "--format", "csv"],
    "plot history": ["plot", "history"],
    "plot metrics": ["plot", "metrics"],
}


@pytest.fixture
def database(tmp_path: Path) -> Path:
    path = tmp_path / "home" / "scores.duckdb"
    path.parent.mkdir()
    open_database(path).close()
    return path


def refused(command: str, out: Path, database: Path, *extra: str) -> str:
    result = CliRunner().invoke(app, [*COMMANDS[command], "--out", str(out), *extra,
                                      "--store", str(database)])  # fmt: skip
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --out "), result.output
    return lines[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_symlink_to_the_score_database_is_refused_and_the_database_kept(
    command: str, database: Path, tmp_path: Path
) -> None:
    before = database.read_bytes()
    link = tmp_path / "chart.png"
    link.symlink_to(database)

    message = refused(command, link, database, "--force")

    assert "the score database" in message or "is a symlink" in message
    assert database.read_bytes() == before and link.is_symlink()


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_symlink_elsewhere_is_refused(command: str, database: Path, tmp_path: Path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    link = tmp_path / "out.png"
    link.symlink_to(target)

    assert "is a symlink; name the file itself" in refused(command, link, database, "--force")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_special_file_is_refused_and_stays_what_it_was(
    command: str, database: Path, tmp_path: Path
) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)

    assert "is a special file" in refused(command, fifo, database, "--force")
    assert stat.S_ISFIFO(fifo.lstat().st_mode)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_an_existing_file_needs_force(command: str, database: Path, tmp_path: Path) -> None:
    existing = tmp_path / "history.png"
    existing.write_bytes(b"an older chart")

    assert "exists; add --force to replace it" in refused(command, existing, database)
    assert existing.read_bytes() == b"an older chart"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_no_folder_is_made(command: str, database: Path, tmp_path: Path) -> None:
    out = tmp_path / "missing" / "deeper" / "chart.png"

    assert "does not exist" in refused(command, out, database)
    assert not (tmp_path / "missing").exists()


def test_what_is_written_is_written_whole(database: Path, tmp_path: Path) -> None:
    out = tmp_path / "one.csv"
    result = CliRunner().invoke(
        app, [*COMMANDS["sql"], "--out", str(out), "--store", str(database)]
    )
    assert result.exit_code == 0, result.output
    assert out.read_text() == "one\n1\n"
    assert [path.name for path in tmp_path.iterdir() if path.name.endswith(".tmp")] == []
