"""How the scoring flow's items become score records, and its run the run's record.

A failed item is recorded too, with what its stages gave before the failure and under the
transcoder of its series (``failed_transcoder_info``), never with scores.
"""

from __future__ import annotations

import platform
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from prefect import runtime
from prefect.logging import get_run_logger

import tracerflow
from tracerflow.errors import StorageError
from tracerflow.flows.run_types import RunContext, ScoreItem
from tracerflow.machine import torch_version
from tracerflow.storage.paths import PathRoots, stored_path
from tracerflow.storage.queries import latest_transcoder
from tracerflow.storage.records import ModelInfo, RunInfo, ScoreRecord, TranscoderInfo
from tracerflow.tasks.results import (
    AttributionStats,
    CheckpointSnapshot,
    ConvertedTranscoder,
    GraphScores,
)
from tracerflow.transcoders import formats


def score_record(item: ScoreItem, run_threads: int, roots: PathRoots | None = None) -> ScoreRecord:
    """An item's record, whether it succeeded or failed: a failed item records what its stages
    gave before the failure (attribution's facts), never scores of an item that failed. With
    ``roots``, its paths are stored relative to them (storage/paths.py), so a moved home or
    another host's artifact root still finds its files."""
    outcome = item.outcome
    ok = outcome.error is None  # then every stage gave its result
    attribution = outcome.attribution
    stats = attribution.stats if attribution else None
    scores = outcome.scored.scores if ok and outcome.scored else None
    exported = outcome.exported if ok else None
    return ScoreRecord(
        transcoder=item.recorded_as,
        model=model_info(item.transcoder.model_name, stats),
        prompt=item.prompt,
        n_tokens=stats.n_tokens if stats else None,
        params=item.transcoder.parameters.recorded(),
        status="ok" if ok else "failed",
        error=outcome.error,
        **recorded_scores(scores),
        phase_seconds=stats.phase_seconds if stats else None,
        attribution_seconds=stats.attribution_seconds if stats else None,
        peak_memory_bytes=stats.peak_memory_bytes if stats else None,
        attribution_threads=stats.threads if stats else run_threads,
        attribution_path=stats.path if stats else None,
        graph_path=_stored(attribution.graph_path if attribution else None, roots, "artifact"),
        graph_files_path=_stored(exported.graph_files_path if exported else None, roots, "home"),
        slug=exported.slug if exported else None,
        created_at=datetime.now(UTC),
    )


def _stored(path: str | None, roots: PathRoots | None, root: str) -> str | None:
    if roots is None:
        return path
    return stored_path(path, roots.artifact_root if root == "artifact" else roots.home)


def model_info(model_name: str, stats: AttributionStats | None) -> ModelInfo:
    """The base model a row is recorded with; its shape is known once attribution ran."""
    return ModelInfo(
        name=model_name,
        n_layers=stats.model_n_layers if stats else None,
        d_model=stats.model_d_model if stats else None,
        d_vocab=stats.model_d_vocab if stats else None,
        n_ctx=stats.model_n_ctx if stats else None,
    )


# Every score a row records: all of GraphScores but the count of features kept by pruning.
RECORDED_SCORES = tuple(name for name in GraphScores.model_fields if name != "n_kept_features")


def recorded_scores(scores: GraphScores | None) -> dict[str, float | int | None]:
    """A row's score columns: the graph's scores, or every one None for a failed item."""
    return {name: getattr(scores, name) if scores else None for name in RECORDED_SCORES}


def transcoder_info(
    snapshot: CheckpointSnapshot, converted: ConvertedTranscoder, training_step: int | None = None
) -> TranscoderInfo:
    """The transcoder a converted source's rows are recorded under: what conversion says, and
    its training step where the run knows one."""
    return TranscoderInfo(
        source=snapshot.source,
        revision=snapshot.revision,
        commit_sha=snapshot.commit_sha,
        content_hash=converted.content_hash,
        kind=converted.kind,
        n_layers=converted.n_layers,
        d_model=converted.d_model,
        d_features=converted.d_features,
        activation=converted.activation,
        activation_params=converted.activation_params,
        format=snapshot.format or snapshot_format(snapshot),
        file_commits=snapshot.file_commits,
        training_step=training_step,
    )


def snapshot_format(snapshot: CheckpointSnapshot) -> str | None:
    """The format of a snapshot cached before snapshots recorded theirs: the registry's answer
    for its folder (cheap: file names and headers); None if the folder is gone."""
    found = formats.detect_format(Path(snapshot.path), formats.SOURCE_FORMATS)
    return found.name if found is not None else None


def failed_transcoder_info(
    run: RunContext, source: str, training_step: int | None = None
) -> TranscoderInfo:
    """The transcoder a source that failed to download or convert is recorded under: its weights
    are unknown now, so the last transcoder recorded under the source (the failure stays in that
    series), else only the source, every unknown fact None (never a placeholder that would start
    a series of its own)."""
    try:
        known = latest_transcoder(run.settings.score_store, source)
    except StorageError as error:  # the rows are still recorded, under less
        get_run_logger().warning("could not look up %s's last transcoder: %s", source, error)
        known = None
    if known is not None:
        return known
    return TranscoderInfo(
        training_step=training_step,
        source=source,
        revision=None,
        commit_sha=None,
        content_hash=None,
        kind=None,
        n_layers=None,
        d_model=None,
        d_features=None,
        activation=None,
    )


def run_info(run: RunContext, records: Sequence[ScoreRecord]) -> RunInfo:
    """The run's own record: where and with what it ran, and how it ended."""
    return RunInfo(
        flow_run_id=run.flow_run_id,
        flow_name=str(runtime.flow_run.flow_name),
        deployment_name=runtime.deployment.name,
        suite_name=run.suite_name,
        started_at=run.started_at,
        finished_at=datetime.now(UTC),
        status=run_status(records),
        tracerflow_version=tracerflow.__version__,
        circuit_tracer_version=version("circuit-tracer"),
        torch_version=torch_version(),
        device=run.device,
        host=socket.gethostname() or platform.node(),
    )


def run_status(records: Sequence[ScoreRecord]) -> str:
    """``completed`` when every item succeeded, ``failed`` when none did, else ``partial``."""
    n_ok = sum(record.status == "ok" for record in records)
    if n_ok == len(records):
        return "completed"
    return "partial" if n_ok else "failed"


def printed_row(record: ScoreRecord) -> dict[str, Any]:
    """What the CLI prints and the UI's tables show of a record, under the database's column
    names."""
    return {
        "transcoder_source": record.transcoder.source,
        "model_name": record.model.name,
        "params_hash": record.params_hash,
        "prompt": record.prompt,
        "status": record.status,
        "replacement_score": record.replacement_score,
        "completeness_score": record.completeness_score,
        "pruned_replacement_score": record.pruned_replacement_score,
        "pruned_completeness_score": record.pruned_completeness_score,
        "n_selected_features": record.n_selected_features,
        "attribution_seconds": record.attribution_seconds,
        "slug": record.slug,
        "error": record.error,
    }
