"""``ArtifactStore.get_or_compute``: the load-or-compute every stage goes through."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from tracerflow.fsutil import SUCCESS_MARKER
from tracerflow.storage.artifacts import ArtifactStore


class Writes:
    """A ``write`` that records each call and writes ``result.txt`` with ``text``."""

    def __init__(self, text: str = "computed") -> None:
        self.text = text
        self.calls: list[Path] = []

    def __call__(self, out_dir: Path) -> None:
        self.calls.append(out_dir)
        (out_dir / "result.txt").write_text(self.text)


def stage_entries(store: ArtifactStore) -> list[str]:
    """Every name in the stage's folder, hidden temporary folders included."""
    return sorted(path.name for path in (store.root / "score").iterdir())


def test_a_miss_computes_into_a_temporary_folder_committed_in_place(tmp_path):
    store = ArtifactStore(tmp_path)
    write = Writes()
    folder, cached = store.get_or_compute("score", "k1", write)
    assert (folder, cached) == (tmp_path / "score" / "k1", False)
    assert (folder / "result.txt").read_text() == "computed"
    assert (folder / SUCCESS_MARKER).is_file()
    (written_into,) = write.calls
    assert written_into != folder and written_into.parent == folder.parent
    assert stage_entries(store) == ["k1"]


def test_a_hit_reads_the_folder_without_computing(tmp_path):
    store = ArtifactStore(tmp_path)
    store.get_or_compute("score", "k1", Writes("first"))
    again = Writes("second")
    folder, cached = store.get_or_compute("score", "k1", again)
    assert cached is True
    assert again.calls == []
    assert (folder / "result.txt").read_text() == "first"


@pytest.mark.parametrize("damage", ["edited", "deleted", "no marker"])
def test_a_damaged_folder_is_recomputed_with_a_warning_naming_it(tmp_path, caplog, damage):
    store = ArtifactStore(tmp_path)
    folder, _ = store.get_or_compute("score", "k1", Writes("first"))
    if damage == "edited":
        (folder / "result.txt").write_text("tampered")
    elif damage == "deleted":
        (folder / "result.txt").unlink()
    else:
        (folder / SUCCESS_MARKER).unlink()
    again = Writes("second")
    with caplog.at_level(logging.WARNING, logger="tracerflow"):
        recomputed, cached = store.get_or_compute("score", "k1", again)
    assert (recomputed, cached) == (folder, False)
    assert len(again.calls) == 1
    assert (folder / "result.txt").read_text() == "second"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(folder) in warnings[0], warnings
    assert stage_entries(store) == ["k1"]


def test_a_write_that_raises_leaves_no_folder_and_no_temporary_folder(tmp_path):
    store = ArtifactStore(tmp_path)

    def failing(out_dir: Path) -> None:
        (out_dir / "partial.txt").write_text("half")
        raise RuntimeError("the computation failed")

    with pytest.raises(RuntimeError, match="the computation failed"):
        store.get_or_compute("score", "k1", failing)
    assert stage_entries(store) == []
    assert store.find("score", "k1") is None


def test_a_write_that_raises_keeps_the_folder_it_would_replace(tmp_path):
    store = ArtifactStore(tmp_path)
    folder, _ = store.get_or_compute("score", "k1", Writes("first"))

    def failing(out_dir: Path) -> None:
        raise RuntimeError("the computation failed")

    with pytest.raises(RuntimeError):
        store.get_or_compute("score", "k1", failing, reuse=lambda found: False)
    assert stage_entries(store) == ["k1"]
    assert store.find("score", "k1") == folder
    assert (folder / "result.txt").read_text() == "first"


def test_a_folder_reuse_refuses_is_readable_while_its_replacement_is_written(tmp_path, caplog):
    store = ArtifactStore(tmp_path)
    folder, _ = store.get_or_compute("score", "k1", Writes("first"))
    refused: list[Path] = []
    seen_while_writing: list[str] = []

    def refuse(found: Path) -> bool:
        refused.append(found)
        return False

    def extend(out_dir: Path) -> None:
        previous = (folder / "result.txt").read_text()
        seen_while_writing.append(previous)
        (out_dir / "result.txt").write_text(previous + "+more")

    with caplog.at_level(logging.WARNING, logger="tracerflow"):
        replaced, cached = store.get_or_compute("score", "k1", extend, reuse=refuse)
    assert (replaced, cached) == (folder, False)
    assert refused == [folder]
    assert seen_while_writing == ["first"]
    assert (folder / "result.txt").read_text() == "first+more"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert stage_entries(store) == ["k1"]


def test_reuse_is_asked_only_about_an_intact_folder(tmp_path):
    store = ArtifactStore(tmp_path)
    asked: list[Path] = []

    def accept(found: Path) -> bool:
        asked.append(found)
        return True

    store.get_or_compute("score", "k1", Writes(), reuse=accept)
    assert asked == []
    folder, cached = store.get_or_compute("score", "k1", Writes("second"), reuse=accept)
    assert cached is True and asked == [folder]


def test_a_second_caller_of_a_key_being_computed_waits_and_reads_it(tmp_path):
    """The key's lock is held for the whole write (another thread cannot take it), and a caller
    after it finds the folder: computed once, never seen half-written or replaced."""
    import threading

    from filelock import Timeout

    store = ArtifactStore(tmp_path)
    inside, release = threading.Event(), threading.Event()

    def slow_write(out_dir: Path) -> None:
        inside.set()
        release.wait(timeout=30)
        (out_dir / "result.txt").write_text("first")

    first = threading.Thread(target=store.get_or_compute, args=("score", "k1", slow_write))
    first.start()
    assert inside.wait(timeout=30)
    held_elsewhere = False
    try:
        store.locked("score", "k1").acquire(timeout=0)  # this thread: its own lock context
        store.locked("score", "k1").release()
    except Timeout:
        held_elsewhere = True
    release.set()
    first.join(timeout=30)
    second = Writes("second")
    folder, cached = store.get_or_compute("score", "k1", second)
    assert held_elsewhere
    assert (cached, second.calls, (folder / "result.txt").read_text()) == (True, [], "first")
    assert stage_entries(store) == ["k1"]  # the locks live outside the stage's folder
