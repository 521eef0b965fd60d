"""A training run's checkpoints: which checkpoint folders a ``--transcoder`` stands for, and
each one's training step.

A transcoder source may be one checkpoint folder (any format the registry detects), a folder
of checkpoint folders (a training run's output: ``run/step-500/``, ``run/step-1000/``, ...) or
a glob of checkpoint folders (``run/step-*``). A folder of checkpoints or a glob stands for
every checkpoint folder in it, each run as a transcoder of its own under its absolute path, in
the order of their steps. A checkpoint's step comes from its folder's name (``step=500``,
``step-500``, ``step_500``, ``global_step500``, ``checkpoint-500``, ``ckpt_500``, or a name
that is only a number), else from its checkpoint: a Lightning ``clt.ckpt``'s ``global_step``,
or a whole number ``global_step`` at the top of its ``config.yaml``. Every checkpoint of a
folder or a glob must have one; a single checkpoint folder records its step where one is found.

Light on purpose (no torch): the run's door checks expand sources here, and so does the
scoring flow at each scheduled run of a deployment that watches a folder (docs/checkpoints.md,
"Training runs").
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tracerflow.errors import CheckpointError, UsageError

# In the order they are tried on a folder's name; the first that matches gives the step.
STEP_IN_NAME = (
    re.compile(r"(?:^|[^a-z])(?:global_?)?step[=_-]?(\d+)(?!\d)", re.IGNORECASE),
    re.compile(r"^(?:checkpoint|ckpt)[=_-]?(\d+)$", re.IGNORECASE),
    re.compile(r"^(\d+)$"),
)
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class TrainingCheckpoint:
    """One transcoder source of a run, and its training step where it has one."""

    source: str  # as the run records it: as given, or a checkpoint folder's absolute path
    step: int | None


def step_from_name(name: str) -> int | None:
    """The training step a checkpoint folder's name states; None when it states none."""
    for pattern in STEP_IN_NAME:
        match = pattern.search(name)
        if match:
            return int(match.group(1))
    return None


def step_from_checkpoint(folder: Path) -> int | None:
    """The step the checkpoint's own files record: a Lightning ``clt.ckpt``'s ``global_step``,
    else a whole-number ``global_step`` at the top of ``config.yaml``; None when neither does."""
    from tracerflow.transcoders.checkpoint import CONFIG_FILE, load_config
    from tracerflow.transcoders.formats import lightning_checkpoint

    if lightning_checkpoint.detect(folder):
        step = lightning_checkpoint.recorded_step(folder)
        if step is not None:
            return step
    if (folder / CONFIG_FILE).is_file():
        try:
            config = load_config(folder)
        except CheckpointError:  # another library's config.yaml (circuit-tracer's): no step;
            return None  # a broken one of this library is the door's to report
        step = config.get("global_step")
        if isinstance(step, int) and not isinstance(step, bool) and step >= 0:
            return step
    return None


def checkpoint_step(folder: Path) -> int | None:
    """A checkpoint folder's training step: its name's, else its checkpoint's."""
    step = step_from_name(folder.name)
    return step if step is not None else step_from_checkpoint(folder)


def is_checkpoint_folder(folder: Path) -> bool:
    """A folder the format registry can run from (cheap: file names and headers)."""
    from tracerflow.transcoders.formats import SOURCE_FORMATS, detect_format

    return folder.is_dir() and detect_format(folder, SOURCE_FORMATS) is not None


def is_glob(source: str) -> bool:
    return any(character in GLOB_CHARACTERS for character in source)


def expand_source(source: str) -> list[TrainingCheckpoint]:
    """The checkpoints ``source`` stands for, in the order of their steps: itself when it is a
    checkpoint folder or no local folder at all (a preset, a Hub repo: the door checks those);
    every checkpoint folder in it when it is a folder of them; every checkpoint folder a glob
    matches. ``UsageError`` in one line for a glob that matches none and for a checkpoint of a
    run whose step is not known."""
    folder = Path(source).expanduser()
    if is_glob(source) and not folder.exists():
        matches = [Path(path) for path in sorted(glob.glob(str(folder)))]
        members = [path for path in matches if is_checkpoint_folder(path)]
        if not members:
            raise UsageError(
                f"transcoder '{source}' matches no checkpoint folder"
                + (f" ({len(matches)} paths that are not)" if matches else "")
            )
        return _run_checkpoints(source, members)
    if not folder.is_dir() or is_checkpoint_folder(folder):
        step = _single_step(folder, source) if folder.is_dir() else None
        return [TrainingCheckpoint(source, step)]
    members = [path for path in sorted(folder.iterdir()) if is_checkpoint_folder(path)]
    if not members:  # the door says what is wrong with the folder itself
        return [TrainingCheckpoint(source, None)]
    return _run_checkpoints(source, members)


def expand_sources(sources: Sequence[str]) -> list[TrainingCheckpoint]:
    """Every source expanded (``expand_source``), each checkpoint once, in the order given."""
    seen: dict[str, TrainingCheckpoint] = {}
    for source in sources:
        for checkpoint in expand_source(source):
            seen.setdefault(checkpoint.source, checkpoint)
    return list(seen.values())


def _single_step(folder: Path, source: str) -> int | None:
    try:
        return checkpoint_step(folder)
    except CheckpointError as error:
        raise UsageError(f"transcoder '{source}': {error}") from None


def _run_checkpoints(source: str, folders: list[Path]) -> list[TrainingCheckpoint]:
    """The checkpoints of a training run, by step; each must have one."""
    checkpoints = []
    for folder in folders:
        step = _single_step(folder, source)
        if step is None:
            raise UsageError(
                f"checkpoint {folder} of transcoder '{source}' has no training step: name its "
                "folder step-N (or step=N, checkpoint-N), or give it a Lightning clt.ckpt or a "
                "config.yaml with global_step"
            )
        checkpoints.append(TrainingCheckpoint(os.path.abspath(folder), step))
    return sorted(checkpoints, key=lambda checkpoint: (checkpoint.step, checkpoint.source))
