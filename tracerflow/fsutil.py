"""Atomic folder writes: the one mechanism every file-producing step uses.

A step writes into a temporary sibling folder, drops a ``_SUCCESS`` marker, then renames the
folder into place. A folder without the marker does not exist as far as tracerflow is concerned,
so an interrupted write never looks finished.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SUCCESS_MARKER = "_SUCCESS"


def is_complete(path: Path) -> bool:
    """True when ``path`` is a folder that an atomic write finished."""
    return (path / SUCCESS_MARKER).is_file()


@contextmanager
def atomic_directory(final_path: Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary folder; on success it becomes ``final_path`` (with a ``_SUCCESS`` marker).

    On any exception the temporary folder is removed and ``final_path`` is left untouched.
    With ``overwrite=False`` an existing complete ``final_path`` is an error; an incomplete one
    (no marker: a crash of an older writer) is replaced.
    """
    final_path = Path(final_path)
    if final_path.exists() and is_complete(final_path) and not overwrite:
        raise FileExistsError(f"{final_path} already exists")
    final_path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = final_path.parent / f".{final_path.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp_path.mkdir()
    try:
        yield tmp_path
        (tmp_path / SUCCESS_MARKER).write_text("")
        if final_path.exists():
            # Move the old folder aside first so that the rename below is a single step.
            stale = final_path.parent / f".{final_path.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(final_path, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp_path, final_path)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
