"""The one way the scoring flow collects what failed: wait for each transcoder's future of a
stage, keep its result or log its error and go on; at the run's end, after every score is
recorded, raise the first kind of failure (items, then evaluations, then dashboards)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger

from tracerflow.errors import AttributionError, TracerflowError
from tracerflow.flows.run_types import SubmittedTranscoder
from tracerflow.storage.records import ScoreRecord

T = TypeVar("T")


class EvaluationError(TracerflowError):
    """A transcoder's quality metrics could not be computed (its scores are recorded)."""


class DashboardsError(TracerflowError):
    """The dashboards stage of one or more transcoders failed; every score was recorded."""


@dataclass(frozen=True)
class Collected(Generic[T]):
    """Each transcoder's result of one stage, and the error of each whose stage failed."""

    results: list[tuple[SubmittedTranscoder, T]] = field(default_factory=list)
    failures: list[tuple[str, BaseException]] = field(default_factory=list)


def collect(
    stage: str,
    transcoders: Sequence[SubmittedTranscoder],
    future_of: Callable[[SubmittedTranscoder], PrefectFuture[Any] | None],
) -> Collected[Any]:
    """Wait for ``stage`` of every transcoder that submitted it; log each failure (the run's
    scores are recorded all the same) and go on."""
    collected: Collected[Any] = Collected()
    for transcoder in transcoders:
        future = future_of(transcoder)
        if future is None:
            continue
        try:
            collected.results.append((transcoder, future.result()))
        except Exception as error:
            get_run_logger().error(
                "%s of %s failed (its scores are recorded): %s", stage, transcoder.source, error
            )
            collected.failures.append((transcoder.source, error))
    return collected


def raise_first_failure(
    records: Sequence[ScoreRecord],
    evaluations: Collected[Any],
    dashboards: Collected[Any],
) -> None:
    """End the run Failed, once everything is recorded: naming the first failed item, else the
    first failed evaluation, else the first failed dashboards stage."""
    failed = [record for record in records if record.status != "ok"]
    if failed:
        first = failed[0]
        raise AttributionError(
            f"{len(failed)} of {len(records)} items failed; the others were recorded. First: "
            f"{first.transcoder.source} on {first.prompt[:40]!r}: {first.error}"
        )
    if evaluations.failures:
        source, error = evaluations.failures[0]
        raise EvaluationError(
            f"{len(evaluations.failures)} transcoder evaluation(s) failed; the scores were "
            f"recorded. First: {source}: {error}"
        )
    if dashboards.failures:
        source, error = dashboards.failures[0]
        raise DashboardsError(
            f"feature dashboards failed for {len(dashboards.failures)} transcoder(s); every "
            f"score was recorded. First: {source}: {type(error).__name__}: {error}"
        )
