"""The content-addressed artifact store: ``<home>/artifacts/<stage>/<key>/``.

A stage's key is ``sha256(stage code version + content hashes of its inputs + its parameters)``
(``stage_key``), so a re-run finds exactly the folders whose inputs did not change. Folders are
written atomically (``tracerflow.fsutil.atomic_directory``) and exist only with their ``_SUCCESS``
marker. The Prefect task of each stage persists its result record inside the same folder, so
deleting a stage's folder also forgets the cached task result and the stage is recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracerflow.fsutil import atomic_directory, is_complete

PREFECT_RESULT_FILE = "_prefect_result"


def stage_key(stage: str, code_version: str, **inputs: Any) -> str:
    """A stable hex key from a stage name, its code version and JSON-serialisable inputs."""
    payload = json.dumps(
        {"stage": stage, "code_version": code_version, "inputs": inputs},
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class ArtifactStore:
    root: Path

    def path(self, stage: str, key: str) -> Path:
        return self.root / stage / key

    def find(self, stage: str, key: str) -> Path | None:
        """The finished folder of (stage, key), or None."""
        folder = self.path(stage, key)
        return folder if is_complete(folder) else None

    @contextmanager
    def write(self, stage: str, key: str) -> Iterator[Path]:
        """A temporary folder that becomes (stage, key) when the block succeeds."""
        with atomic_directory(self.path(stage, key), overwrite=True) as tmp_dir:
            yield tmp_dir

    def prefect_result_key(self, stage: str, key: str) -> str:
        """Where the stage's Prefect task persists its result, relative to ``root``."""
        return f"{stage}/{key}/{PREFECT_RESULT_FILE}"
