"""Atomic writes: the one mechanism every file-producing step uses, for folders and for files.

A single file (a graph JSON, the viewer's index, a command's ``--out``) is written to a temporary
sibling and renamed onto its name, so a reader sees the old content or the new, never half.
A step's folder is written as a temporary sibling folder that gets a ``_SUCCESS`` marker and is
then renamed into place. A folder without the marker does not exist as far as tracerflow is
concerned, so an interrupted write never looks finished. The marker is the folder's manifest: the
sha256 of every file written, so ``verify_directory`` can tell a folder that is still what was
committed from one cut short, edited or planted since.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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
        _give_umask_modes(tmp_path)
        manifest = {"files": file_hashes(tmp_path)}
        (tmp_path / SUCCESS_MARKER).write_text(json.dumps(manifest, indent=1, sort_keys=True))
        if final_path.exists():
            # Move the old folder aside first so that the rename below is a single step.
            stale = final_path.parent / f".{final_path.name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(final_path, stale)
            shutil.rmtree(stale, ignore_errors=True)
        os.replace(tmp_path, final_path)
    except BaseException:
        shutil.rmtree(tmp_path, ignore_errors=True)
        raise


def _give_umask_modes(folder: Path) -> None:
    """Give each file under ``folder`` the mode a plain ``open`` would (0666 less the umask):
    safetensors writes 0600, which hides a team's shared artifacts from everyone else."""
    mode = 0o666 & ~process_umask()
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, mode)


def process_umask() -> int:
    """This process's umask, read without setting it (``os.umask`` would, racing other threads)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o022  # no /proc (not Linux): the usual default


@contextmanager
def atomic_file(final_path: Path) -> Iterator[Path]:
    """Yield a temporary sibling path to write; when the block ends without an exception it is
    renamed onto ``final_path``. On any exception, or when the block wrote nothing, the temporary
    file is removed and ``final_path`` is left untouched. ``final_path``'s folder must exist."""
    final_path = Path(final_path)
    tmp_path = final_path.parent / f".{final_path.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        yield tmp_path
        os.replace(tmp_path, final_path)
    finally:
        with contextlib.suppress(OSError):
            tmp_path.unlink(missing_ok=True)


def read_small_file(path: Path, limit: int, what: str) -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; ``ConfigError`` (exit 2)
    naming ``what`` it is otherwise. Never more than ``limit + 1`` bytes are read, so a device
    (``/dev/zero``), a FIFO (which would block) or a huge file is refused, not read until the
    machine runs out of memory."""
    import stat

    from tracerflow.errors import ConfigError

    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} does not exist") from None
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the {what} ({error.strerror})") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "not a regular file (a device or a pipe?)"
        raise ConfigError(f"{path}: the {what} is {kind}")
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read the {what} ({error.strerror})") from None
    if len(data) > limit:
        raise ConfigError(f"{path}: the {what} is larger than {limit // 2**20} MiB")
    return data


def check_no_link_below(folder: Path, path: Path) -> None:
    """``StorageError`` when ``path`` (inside ``folder``) or a folder between them is a symlink:
    a publish step writes into the folder it was given, never through a link out of it (a
    planted ``graph-files/features/<scan>`` link once led a feature pack elsewhere). ``folder``
    itself may be a link: where a home lives is its owner's choice."""
    from tracerflow.errors import StorageError

    current = folder
    for part in path.relative_to(folder).parts:
        current = current / part
        if current.is_symlink():
            raise StorageError(
                f"{current} is a symlink: tracerflow publishes into {folder} only, not through "
                "links out of it; remove the link and run again"
            )


def write_bytes_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``atomic_file``."""
    with atomic_file(path) as tmp_path:
        tmp_path.write_bytes(data)


def write_text_atomically(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through ``atomic_file``."""
    write_bytes_atomically(path, text.encode("utf-8"))


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` (but the marker), by POSIX path relative to it."""
    return {
        path.relative_to(folder).as_posix(): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != SUCCESS_MARKER
    }


def verify_directory(path: Path) -> str | None:
    """None when ``path`` is a finished folder whose every file still has the sha256 written at
    commit time; else what is wrong with it, in a few words. Reads every file: ~2 s per GB here.
    Files added after the commit are ignored: nothing reads a file the manifest does not list.
    """
    marker = path / SUCCESS_MARKER
    if not marker.is_file():
        return f"no {SUCCESS_MARKER} marker"
    try:
        files = json.loads(marker.read_text())["files"]
        if not isinstance(files, dict):
            raise TypeError("files is not a mapping")
    except (ValueError, KeyError, TypeError) as error:
        return f"{SUCCESS_MARKER} is not a manifest ({error})"
    root = path.resolve()
    for name, expected in files.items():
        file = (path / name).resolve()
        if not file.is_relative_to(root):
            return f"the manifest names {name!r}, outside the folder"
        if not file.is_file():
            return f"{name} is missing"
        if sha256_file(file) != expected:
            return f"{name} changed since it was written"
    return None


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (checkpoints are several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
