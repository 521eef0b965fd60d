"""`tracerflow sql --out`: it never replaces the score database, a folder, or (without --force)
an existing file; a file it cannot write is one line, never a traceback; it writes atomically.

Real DuckDB files written by the real writer; the real `tracerflow` app.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.storage.builders import populate
from tracerflow.cli import app


@pytest.fixture
def score_db(tmp_path: Path) -> Path:
    """A real score database of its own per test: a test that breaks it breaks only itself."""
    db_path = tmp_path / "home" / "scores.duckdb"
    populate(db_path, nights=1)
    return db_path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def sql(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["sql", "SELECT 1 AS x", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


def assert_one_error_line(output: str, *fragments: str) -> None:
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in lines[0], output


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
@pytest.mark.parametrize("spelling", ["direct", "dotdot", "symlink", "hardlink"])
def test_out_onto_the_score_database_is_refused(
    score_db: Path, tmp_path: Path, spelling: str, force: bool
) -> None:
    before = sha256(score_db)
    if spelling == "direct":
        out = score_db
    elif spelling == "dotdot":
        out = score_db.parent / ".." / score_db.parent.name / score_db.name
    elif spelling == "symlink":
        out = tmp_path / "link.duckdb"
        out.symlink_to(score_db)
    else:
        out = tmp_path / "hard.duckdb"
        out.hardlink_to(score_db)
    code, output = sql("--db", str(score_db), "--out", str(out), *(["--force"] if force else []))
    assert code != 0
    assert_one_error_line(output, "score database")
    assert sha256(score_db) == before


def test_out_onto_the_default_database_is_refused(
    score_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACERFLOW_HOME", str(score_db.parent))
    before = sha256(score_db)
    code, output = sql("--out", str(score_db), "--force")
    assert code != 0
    assert_one_error_line(output, "score database")
    assert sha256(score_db) == before


def test_out_onto_an_existing_file_needs_force(score_db: Path, tmp_path: Path) -> None:
    out = tmp_path / "result.csv"
    out.write_text("precious\n")
    code, output = sql("--db", str(score_db), "--format", "csv", "--out", str(out))
    assert code != 0
    assert_one_error_line(output, str(out), "--force")
    assert out.read_text() == "precious\n"

    code, _ = sql("--db", str(score_db), "--format", "csv", "--out", str(out), "--force")
    assert code == 0
    assert out.read_text() == "x\n1\n"


def test_out_onto_a_folder_is_refused_even_with_force(score_db: Path, tmp_path: Path) -> None:
    folder = tmp_path / "results"
    folder.mkdir()
    code, output = sql("--db", str(score_db), "--out", str(folder), "--force")
    assert code != 0
    assert_one_error_line(output, "folder")
    assert list(folder.iterdir()) == []


def test_an_unwritable_out_is_one_line(score_db: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, output = sql("--db", str(score_db), "--out", str(blocker / "result.csv"))
    assert code != 0
    assert_one_error_line(output, f"--out {blocker / 'result.csv'}: {blocker} is not a folder")


def test_a_failed_write_leaves_no_half_file(
    score_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    results = tmp_path / "results"
    results.mkdir()
    out = results / "result.json"
    out.write_text("old\n")

    def fail_mid_write(self: Path, text: str, encoding: str | None = None) -> int:
        with open(self, "w", encoding=encoding) as handle:
            handle.write(text[:3])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", fail_mid_write)
    code, output = sql("--db", str(score_db), "--format", "json", "--out", str(out), "--force")
    monkeypatch.undo()
    assert code != 0
    assert_one_error_line(output, "No space left on device")
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in results.iterdir()) == ["result.json"]
