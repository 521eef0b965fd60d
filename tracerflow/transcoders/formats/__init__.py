"""The registry of transcoder formats: which format a folder is, and that format's answers.

``convert``, ``inspect``, the download stage and the run's door checks ask here, so none of them
names a format's files. Each format is one module of this package (``crosslayer_transcoder``,
``lightning_checkpoint``, ``circuit_tracer``) that builds a ``SourceFormat`` (``base``) and is
listed below (``gemma_scope`` and ``hub_config`` too, over the per-layer files of
``layer_files``); docs/checkpoints.md, "Adding a format". Importing this package and detecting a
folder never imports torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tracerflow.errors import CheckpointError
from tracerflow.transcoders.formats import (
    circuit_tracer,
    crosslayer_transcoder,
    gemma_scope,
    hub_config,
    lightning_checkpoint,
)
from tracerflow.transcoders.formats.base import (
    ConvertibleSource,
    FolderFormat,
    HubFile,
    SourceFormat,
)

# The formats a run starts from, in the order a run prefers them (download, the door checks and
# convert), then the same formats in the order inspect prefers them. On equal detection scores
# the one listed first wins: a folder holding a checkpoint and circuit-tracer files converted
# from it runs from the checkpoint, and inspect shows what the converted files are. A Hub
# download fetches each format's files in the run's order until one format's are all there
# (a Hub config's config.yaml before circuit-tracer's layer files, which it may sit beside).
SOURCE_FORMATS: tuple[SourceFormat, ...] = (
    crosslayer_transcoder.FORMAT,
    lightning_checkpoint.FORMAT,
    hub_config.FORMAT,
    circuit_tracer.FORMAT,
    gemma_scope.FORMAT,
)
FORMATS: tuple[FolderFormat, ...] = (
    circuit_tracer.FORMAT,
    crosslayer_transcoder.FORMAT,
    lightning_checkpoint.FORMAT,
    hub_config.FORMAT,
    gemma_scope.FORMAT,
)

__all__ = [
    "FORMATS",
    "SOURCE_FORMATS",
    "ConvertibleSource",
    "FolderFormat",
    "HubFile",
    "SourceFormat",
    "check_source_folder",
    "checkpoint_files",
    "describe_folder",
    "detect_format",
    "download_pattern_groups",
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
    """``folder``'s format as a run reads it; ``CheckpointError`` as ``folder_format``. ``label``
    is how the user named the folder (default: its path)."""
    folder = _existing_folder(folder)
    label = str(folder) if label is None else label
    found = detect_format(folder, SOURCE_FORMATS)
    if isinstance(found, SourceFormat):
        return found
    raise _unknown_folder(label, SOURCE_FORMATS)


def describe_folder(folder: str | Path) -> dict[str, Any]:
    """What ``tracerflow inspect`` shows of a folder of any known format."""
    folder = Path(folder).expanduser()
    return folder_format(folder).describe(folder)


def read_source(folder: str | Path) -> ConvertibleSource:
    """The transcoder in ``folder``, validated by its format's reader, ready to convert."""
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


def download_pattern_groups() -> list[tuple[SourceFormat, list[str]]]:
    """What the download stage fetches from a Hub repo, format by format in the run's order: it
    stops at the first format whose files are then all there (``detect`` says 1), so a repo that
    holds a checkpoint beside a large training file fetches the checkpoint only. Formats whose
    files a config picks among (GemmaScope's) are never fetched by pattern."""
    return [(found, list(found.file_patterns)) for found in SOURCE_FORMATS if found.downloadable]


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
