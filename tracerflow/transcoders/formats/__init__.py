"""The registry of transcoder formats: which format a folder is, and that format's answers.

``convert``, ``inspect``, the download stage and the run's door checks ask here, so none of them
names a format's files. Each format is one module of this package (``crosslayer_transcoder``,
``converted``) that builds a ``SourceFormat`` or ``FolderFormat`` (``base``) and is listed below;
docs/checkpoints.md, "Adding a format". Importing this package and detecting a folder never
imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tracerflow.errors import CheckpointError
from tracerflow.transcoders.formats import converted, crosslayer_transcoder
from tracerflow.transcoders.formats.base import FolderFormat, SourceFormat

if TYPE_CHECKING:
    from tracerflow.transcoders.checkpoint import Checkpoint

# The checkpoint formats a run starts from (download, the door checks and convert look for these
# only), then every format inspect knows. On equal detection scores the one listed first wins:
# inspect reads a folder with tracerflow.json as converted, whatever else it holds.
SOURCE_FORMATS: tuple[SourceFormat, ...] = (crosslayer_transcoder.FORMAT,)
FORMATS: tuple[FolderFormat, ...] = (converted.FORMAT, *SOURCE_FORMATS)

__all__ = [
    "FORMATS",
    "SOURCE_FORMATS",
    "FolderFormat",
    "SourceFormat",
    "check_source_folder",
    "checkpoint_files",
    "describe_folder",
    "detect_format",
    "download_patterns",
    "folder_format",
    "read_source",
    "source_format",
]


def detect_format(folder: Path, among: tuple[FolderFormat, ...] = FORMATS) -> FolderFormat | None:
    """The format of ``among`` that scores highest on ``folder`` (the first listed on a tie);
    None when none recognises anything in it."""
    best, best_score = None, 0.0
    for candidate in among:
        score = candidate.detect(folder)
        if score > best_score:
            best, best_score = candidate, score
    return best


def folder_format(folder: str | Path) -> FolderFormat:
    """``folder``'s format; ``CheckpointError`` naming the folder and the formats known when it
    is not a folder or no format recognises it."""
    folder = _existing_folder(folder)
    found = detect_format(folder)
    if found is None:
        raise _unknown_folder(str(folder), FORMATS)
    return found


def source_format(folder: str | Path, label: str | None = None) -> SourceFormat:
    """``folder``'s checkpoint format; ``CheckpointError`` as ``folder_format``, and for a folder
    of a format that is no checkpoint (one tracerflow converted). ``label`` is how the user
    named the folder (default: its path)."""
    folder = _existing_folder(folder)
    label = str(folder) if label is None else label
    found = detect_format(folder, SOURCE_FORMATS)
    if isinstance(found, SourceFormat):
        return found
    other = detect_format(folder)
    if other is not None:
        raise CheckpointError(
            f"'{label}' is a {other.title} folder, not a transcoder checkpoint; give the "
            "checkpoint it was converted from"
        )
    raise _unknown_folder(label, SOURCE_FORMATS)


def describe_folder(folder: str | Path) -> dict[str, Any]:
    """What ``tracerflow inspect`` shows of a folder of any known format."""
    folder = Path(folder).expanduser()
    return folder_format(folder).describe(folder)


def read_source(folder: str | Path) -> Checkpoint:
    """The checkpoint in ``folder``, validated by its format's reader, ready to convert."""
    folder = Path(folder).expanduser()
    return source_format(folder).read(folder)


def check_source_folder(folder: Path, label: str) -> None:
    """The run's door checks of a checkpoint folder (``label`` as the user named it): a known
    checkpoint format, all its files there, and that format's cheap checks. ``CheckpointError``
    otherwise."""
    found = source_format(folder, label)
    missing = [name for name in found.files(folder) if not (folder / name).is_file()]
    if missing:
        raise CheckpointError(
            f"'{label}' is not a transcoder checkpoint folder: no {' or '.join(missing)}"
        )
    found.check(folder)


def checkpoint_files(folder: Path) -> tuple[str, ...]:
    """The files that make up the checkpoint in ``folder`` by its format (some may be missing);
    none when it is no checkpoint format's folder."""
    found = detect_format(folder, SOURCE_FORMATS)
    return found.files(folder) if isinstance(found, SourceFormat) else ()


def download_patterns() -> list[str]:
    """What the download stage fetches from a Hub repo: every checkpoint format's files, since
    the format is known only once they are here."""
    return list(dict.fromkeys(p for found in SOURCE_FORMATS for p in found.file_patterns))


def _existing_folder(folder: str | Path) -> Path:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: checkpoint folder does not exist")
    return folder


def _unknown_folder(label: str, formats: tuple[FolderFormat, ...]) -> CheckpointError:
    files = " or ".join(dict.fromkeys(p for found in formats for p in found.file_patterns))
    known = ", ".join(found.title for found in formats)
    return CheckpointError(
        f"'{label}' is not a transcoder checkpoint folder: no {files} (the formats tracerflow "
        f"reads: {known})"
    )
