"""The content-addressed artifact store: ``<home>/artifacts/<stage>/<key>/``, the one cache.

A stage's key is the sha256 of its code version, its inputs' content hashes and its parameters
(``stage_key``). A folder is written atomically with a manifest of its files' sha256 and counts as
the stage's result only while every file still matches (``ArtifactStore.find``); anything else is
recomputed, with a warning naming the folder. Results hold no paths, so a home can move.

Every stage loads or computes its folder through ``ArtifactStore.get_or_compute``: a stage is a
key, a function writing the folder's files, and the reading of the folder into its typed result.

Many runs, on one host or several, may share one store (``TRACERFLOW_ARTIFACT_ROOT``): each
(stage, key) is looked up and computed under a file lock of its own
(``<root>/.locks/<stage>/<key>.lock``), so one run computes a missing folder while the others
wait and then read it, and an intact folder is never replaced under a reader (only a folder
``reuse`` refuses is, and its stage holds the same lock while it reads it: ``locked``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from tracerflow.fsutil import atomic_directory, verify_directory
from tracerflow.hashing import sha256_json

logger = logging.getLogger(__name__)
LOCKS_DIR = ".locks"


def stage_key(stage: str, code_version: str, **inputs: Any) -> str:
    """A stable hex key from a stage name, its code version and JSON-serialisable inputs."""
    return sha256_json({"stage": stage, "code_version": code_version, "inputs": inputs})


def _always(folder: Path) -> bool:
    return True


@dataclass(frozen=True)
class ArtifactStore:
    root: Path

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def locked(self, stage: str, key: str) -> FileLock:
        """The lock of (stage, key), shared by every process using this store. Re-entrant in a
        thread (one object per lock file in a process), so a stage may hold it around
        ``get_or_compute`` and around what it reads from the folder afterwards."""
        lock_path = self.root / LOCKS_DIR / stage / f"{key}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        return FileLock(str(lock_path), is_singleton=True)

    def find(self, stage: str, key: str) -> Path | None:
        """The folder of (stage, key) when it is intact, else None (and a warning when a folder
        is there but not intact: the caller recomputes it)."""
        folder = self.path(stage, key)
        if not folder.exists():
            return None
        problem = verify_directory(folder)
        if problem is None:
            return folder
        logger.warning("recomputing %s: %s", folder, problem)
        return None

    def get_or_compute(
        self,
        stage: str,
        key: str,
        write: Callable[[Path], object],
        *,
        reuse: Callable[[Path], bool] = _always,
    ) -> tuple[Path, bool]:
        """The folder of (stage, key) and whether the store had it (``cached``).

        An intact folder (``find``) that ``reuse`` accepts is the result. Otherwise ``write``
        fills a temporary folder, which then replaces (stage, key) atomically. A write that
        raises leaves no temporary folder behind, and (stage, key) as it was.

        ``reuse(folder)``: whether an intact folder still stands for the result, for a stage
        whose result is more than its folder (download: the checkpoint it names, outside the
        store, is still there; dashboards: the pack holds the features wanted). A folder it
        refuses stays in place until the new one replaces it, so ``write`` may read it.

        All of it runs under ``locked(stage, key)``: a second run asking for the same folder
        waits for the first one's write, then finds it (computed once, never half-read).
        """
        with self.locked(stage, key):
            folder = self.find(stage, key)
            if folder is not None and reuse(folder):
                return folder, True
            final = self.path(stage, key)
            with atomic_directory(final, overwrite=True) as tmp_dir:
                write(tmp_dir)
            return final, False
