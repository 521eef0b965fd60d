"""A home can be moved or copied: what it caches holds no absolute path, so a moved home keeps
working and a copy never reads the home it was copied from."""

from __future__ import annotations

import shutil
import subprocess

from tests.reliability.harness import PROMPTS, assert_reproduces, run


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
