"""The content-addressed artifact store: ``<home>/artifacts/<stage>/<key>/``, the one cache.

A stage's key is the sha256 of its code version, its inputs' content hashes and its parameters
(``stage_key``). A folder is written atomically with a manifest of its files' sha256 and counts as
the stage's result only while every file still matches (``ArtifactStore.find``); anything else is
recomputed, with a warning naming the folder. Results hold no paths, so a home can move.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracerflow.fsutil import atomic_directory, verify_directory
from tracerflow.hashing import sha256_json

logger = logging.getLogger(__name__)


def stage_key(stage: str, code_version: str, **inputs: Any) -> str:
    """A stable hex key from a stage name, its code version and JSON-serialisable inputs."""
    return sha256_json({"stage": stage, "code_version": code_version, "inputs": inputs})


@dataclass(frozen=True)
class ArtifactStore:
    root: Path

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

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

    @contextmanager
    def write(self, stage: str, key: str) -> Iterator[Path]:
        """A temporary folder that becomes (stage, key) when the block succeeds."""
        with atomic_directory(self.path(stage, key), overwrite=True) as tmp_dir:
            yield tmp_dir
