"""The scoring flow's dashboards step: each transcoder's feature pack, after its graphs' exports.

``submit_dashboards`` queues the dashboards stage of one transcoder right after its prompts, so
with the in-process runner (one task at a time) it runs while the transcoder's model is still
the assembled one, after every attribution on it, never beside one. It waits for the exports
(failed ones too) and takes the features of the graph files that exist.

A failed dashboards stage loses no score: the flow records every row first, then logs the error
and ends Failed with a message that says the scores were recorded (``raise_if_dashboards_failed``).
The viewer keeps the pack it had, since a pack is only published once it is complete.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.utilities.annotations import allow_failure

from tracerflow.errors import TracerflowError
from tracerflow.tasks.dashboards import dashboards_task
from tracerflow.tasks.export import graph_slug
from tracerflow.tasks.results import ConvertedTranscoder, ModelSpec

if TYPE_CHECKING:
    from tracerflow.flows.score import RunContext
    from tracerflow.flows.validation import RunRequest


class DashboardsError(TracerflowError):
    """The dashboards stage of one or more transcoders failed; every score was recorded."""


@dataclass(frozen=True)
class SubmittedDashboards:
    """One transcoder's dashboards stage, queued."""

    source: str
    future: PrefectFuture[Any]


def corpus_for(source: str, corpus: str | None) -> str | None:
    """The corpus file of a transcoder's dashboards: the run's ``--corpus``, else its preset's
    ``dashboard_corpus``, else None (the run's prompts)."""
    from tracerflow.presets import PACKAGE_PREFIX, find_preset, resolve_package_path

    if corpus is not None:
        return str(Path(corpus).expanduser().resolve())
    preset = find_preset(source)
    if preset is None or preset.dashboard_corpus is None:
        return None
    if preset.dashboard_corpus.startswith(PACKAGE_PREFIX):
        return str(resolve_package_path(preset.dashboard_corpus))
    return str(Path(preset.dashboard_corpus).expanduser().resolve())


def submit_dashboards(
    run: RunContext,
    source: str,
    model: ModelSpec,
    converted: ConvertedTranscoder,
    scan: str,
    exports: list[PrefectFuture[Any]],
    request: RunRequest,
) -> SubmittedDashboards:
    """Queue the dashboards stage of one transcoder after its exports, failed or not."""
    graph_files_dir = Path(run.settings.graph_files_dir)
    graph_files = [
        graph_files_dir / f"{graph_slug(source, converted.content_hash, prompt)}.json"
        for prompt in request.prompts
    ]
    future = dashboards_task.submit(
        model,
        converted,
        scan,
        corpus_for(source, request.corpus),
        list(request.prompts),
        graph_files,
        request.all_features,
        run.store,
        graph_files_dir,
        wait_for=[allow_failure(export) for export in exports],
    )
    return SubmittedDashboards(source, future)


def dashboards_failures(submitted: list[SubmittedDashboards]) -> list[str]:
    """Wait for every dashboards stage; log and return one line per failed one."""
    failures = []
    for dashboards in submitted:
        try:
            dashboards.future.result()
        except Exception as error:
            failures.append(f"{dashboards.source}: {type(error).__name__}: {error}")
            get_run_logger().error(
                "feature dashboards of %s failed (its scores are recorded): %s",
                dashboards.source,
                error,
            )
    return failures


def raise_if_dashboards_failed(failures: list[str]) -> None:
    """End the run Failed when a dashboards stage failed, after its scores were recorded."""
    if failures:
        raise DashboardsError(
            f"feature dashboards failed for {len(failures)} transcoder(s); every score was "
            f"recorded. First: {failures[0]}"
        )
