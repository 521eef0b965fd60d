"""A stage's progress as one Prefect progress artifact (attribute, evaluate, dashboards).

Each API call costs more than a small stage's work per step, so the artifact is created when
first shown and updated at most every ``every_seconds``. Progress is a courtesy: an artifact the
API refuses is logged as a warning, never a failure of the stage.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact

logger = logging.getLogger(__name__)


class ProgressArtifact:
    """One progress artifact: ``show(percent)`` creates it, then updates it."""

    def __init__(
        self, description: str, *, key: str | None = None, every_seconds: float = 0.0
    ) -> None:
        self.description = description
        self.key = key
        self.every_seconds = every_seconds
        self.artifact_id: Any = None
        self.last_shown = -math.inf

    @property
    def shown(self) -> bool:
        """Whether the artifact exists (it was shown at least once)."""
        return self.artifact_id is not None

    def show(self, percent: float, *, now: bool = False) -> bool:
        """Show ``percent`` (0-100) done, unless shown less than ``every_seconds`` ago (``now``:
        regardless); returns whether it did."""
        moment = time.monotonic()
        if not now and moment - self.last_shown < self.every_seconds:
            return False
        self.last_shown = moment
        self._send(percent)
        return True

    def finish(self) -> None:
        """Show 100% done, if the artifact was shown at all."""
        if self.shown:
            self._send(100.0)

    def _send(self, percent: float) -> None:
        try:
            if self.artifact_id is None:
                self.artifact_id = create_progress_artifact(
                    progress=percent, key=self.key, description=self.description
                )
            else:
                update_progress_artifact(self.artifact_id, progress=percent)
        except Exception as error:
            logger.warning("could not update the progress of %s: %s", self.description, error)
