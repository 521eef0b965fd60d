"""The scoring flow: every transcoder × every prompt, from download to DuckDB.

    download -> convert -> (assemble) -> attribute -> score -> export -> record
                                                        (per transcoder) -> dashboards, evaluate

Each stage is a cached task whose files live in the artifact store under a content key, so a
re-run recomputes exactly what changed (and nothing at all when nothing did). The per-prompt
stages run a chunk of a transcoder's prompts per task run (``PROMPTS_PER_TASK``), each prompt
keeping its own store entry per stage. A failing prompt fails its own items with a clear
message; every other item's scores are still recorded, then the run ends Failed so the UI and
the CLI say so. A transcoder's feature dashboards run once its exports are done, its evaluation
once all its prompts are; either failing fails the run only after every score is recorded
(``flows.failures``). The run's types are in ``flows.run_types``, its rows are built by
``flows.records``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, runtime
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

from tracerflow.errors import ConfigError, RunNotRecordedError, StorageError
from tracerflow.flows.dashboards import feature_pack, submit_dashboards
from tracerflow.flows.evaluation import metrics_record, submit_evaluation
from tracerflow.flows.failures import collect, raise_first_failure
from tracerflow.flows.records import (
    failed_transcoder_info,
    printed_row,
    run_info,
    score_record,
    transcoder_info,
)
from tracerflow.flows.report import publish
from tracerflow.flows.run_types import (
    ChunkStages,
    ItemOutcome,
    PromptChunk,
    RunContext,
    ScoreItem,
    SubmittedTranscoder,
    TranscoderRun,
)
from tracerflow.flows.validation import model_for_source, validate_run_request
from tracerflow.machine import default_device, default_threads
from tracerflow.model_sources import model_identity
from tracerflow.parameters import RunRequest
from tracerflow.presets import run_parameters
from tracerflow.settings import get_settings
from tracerflow.storage.artifacts import ArtifactStore
from tracerflow.storage.metrics import MetricsRecord
from tracerflow.storage.paths import PathRoots
from tracerflow.storage.queries import previous_suite_run_scores
from tracerflow.storage.records import ScoreRecord
from tracerflow.storage.training import scored_checkpoints
from tracerflow.tasks.attribute import attribute_task
from tracerflow.tasks.convert import convert_task
from tracerflow.tasks.dashboards import viewer_scan
from tracerflow.tasks.download import download_task
from tracerflow.tasks.export import export_task, graph_slug
from tracerflow.tasks.record import record_task
from tracerflow.tasks.results import ConvertedTranscoder, ModelSpec, PromptFailure, error_text
from tracerflow.tasks.score import score_task
from tracerflow.training import TrainingCheckpoint, expand_sources


@flow(
    name="score-transcoders",
    log_prints=True,
    # One item at a time in-process: attribution already uses every core, and two at once only
    # contend for memory. Pass a DaskTaskRunner (with_options) to fan out over workers.
    task_runner=ThreadPoolTaskRunner(max_workers=1),
)
def score_flow(
    request: RunRequest, suite_name: str | None = None, regression_margin: float = 0.02
) -> list[dict[str, Any]]:
    """Score every transcoder of ``request`` on every prompt and record the run; returns one
    row per item.

    ``request.threads`` is torch's intra-op thread count for attribution (None: the ``threads``
    setting, else torch's default for this machine); it is resolved once, here, and recorded with
    every row, so the same inputs and settings on the same machine give the same numbers.
    ``regression_margin``: a transcoder whose mean replacement score drops by more than this since
    the suite's previous run is warned of.
    """
    # Deployments reach the flow without the CLI's checks: its parameters' checks, before anything
    # runs (a bad source or prompt fails its own items, recorded in their series).
    validate_run_request(request, check_items=False)
    checkpoints = run_checkpoints(request)
    if not checkpoints:
        get_run_logger().info(
            "every checkpoint of %s is scored already: nothing to run",
            ", ".join(request.transcoders),
        )
        return []
    run = start_run(request, suite_name)
    submitted = [
        submit_transcoder(run, checkpoint.source, request, checkpoint.step)
        for checkpoint in checkpoints
    ]
    submitted = [submit_evaluation(run, request, transcoder) for transcoder in submitted]
    records = [
        score_record(item, run.threads, PathRoots(run.settings.home, run.settings.artifacts_dir))
        for transcoder in submitted
        for item in score_items(transcoder)
    ]
    evaluations = collect("evaluation", submitted, lambda transcoder: transcoder.evaluation)
    metrics = [metrics_record(transcoder, result) for transcoder, result in evaluations.results]
    rows = record_run(run, records, metrics)
    warn_of_regressions(run, rows, regression_margin, metrics)
    dashboards = collect("feature dashboards", submitted, lambda transcoder: transcoder.dashboards)
    raise_first_failure(records, evaluations, dashboards)
    return rows


# --- the run ----------------------------------------------------------------------------------


def run_checkpoints(request: RunRequest) -> list[TrainingCheckpoint]:
    """The transcoders the run scores: each source, a folder of checkpoints or a glob standing
    for each checkpoint in it (``tracerflow.training``); with ``unscored_only``, less those the
    score database already holds a successful score of on every prompt (by folder and step),
    so a deployment watching a training run's folder scores each new checkpoint once."""
    checkpoints = expand_sources(request.transcoders)
    if not request.unscored_only:
        return checkpoints
    store = get_settings().score_store
    try:
        scored = scored_checkpoints(
            store, [(c.source, c.step) for c in checkpoints], request.prompts
        )
    except StorageError as error:  # e.g. a lake an older tracerflow made: it holds no steps
        get_run_logger().warning("could not read which checkpoints are scored: %s", error)
        scored = set()
    for checkpoint in checkpoints:
        if (checkpoint.source, checkpoint.step) in scored:
            get_run_logger().info(
                "%s (step %s) is scored already", checkpoint.source, checkpoint.step
            )
    return [c for c in checkpoints if (c.source, c.step) not in scored]


def start_run(request: RunRequest, suite_name: str | None) -> RunContext:
    settings = get_settings()
    threads = attribution_threads(request.threads, settings.threads, settings.home)
    get_run_logger().info("attribution runs at %d torch threads", threads)
    return RunContext(
        flow_run_id=str(runtime.flow_run.id),
        suite_name=suite_name,
        settings=settings,
        store=ArtifactStore(settings.artifacts_dir),
        dtype=request.dtype,
        device=request.device or default_device(),
        threads=threads,
        started_at=datetime.now(UTC),
    )


def attribution_threads(requested: int | None, configured: int | None, home: Path) -> int:
    """The run's thread count: the flow's parameter, else the setting, else torch's default (known
    without importing torch once a run in ``home`` has asked, ``machine.default_threads``)."""
    if requested is not None:
        threads = requested
    else:
        threads = configured if configured is not None else default_threads(home)
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    return threads


# Prompts per task run of the attribute, score and export stages. A task run costs the Prefect
# API tens of milliseconds, more than a toy prompt's whole work; a chunk of 32 makes that cost
# small per prompt, while each prompt keeps its own store entry per stage (caching stays per
# prompt). The price: a Dask fan-out spreads chunks, not prompts, over its workers.
PROMPTS_PER_TASK = 32


# --- one transcoder: prepare it, submit its prompts ------------------------------------------


def submit_transcoder(
    run: RunContext, source: str, request: RunRequest, training_step: int | None = None
) -> SubmittedTranscoder:
    """Download and convert one transcoder, then submit each chunk's stages and its dashboards;
    when it cannot be prepared, every one of its prompts fails with that error.
    ``training_step``: the checkpoint's step in its training run, recorded with its rows."""
    logger = get_run_logger()
    transcoder = TranscoderRun(
        source=source,
        model_name=model_for_source(source, request.model),
        parameters=run_parameters(source, request),
    )
    prompts = tuple(request.prompts)
    logger.info("transcoder %s on model %s", source, transcoder.model_name)
    try:
        snapshot = download_task.submit(source, run.store).result()
        converted = convert_task.submit(snapshot, run.dtype, run.store).result()
    except Exception as error:
        logger.error("transcoder %s failed: %s", source, error)
        return SubmittedTranscoder(
            transcoder,
            prompts,
            recorded_as=failed_transcoder_info(run, source, training_step),
            error=error_text(error),
        )
    model = ModelSpec(
        name=transcoder.model_name,
        identity=model_identity(transcoder.model_name),
        dtype=run.dtype,
        device=run.device,
    )
    pack = feature_pack(request, source, model, converted)
    submitted = SubmittedTranscoder(
        transcoder,
        prompts,
        recorded_as=transcoder_info(snapshot, converted, training_step),
        model=model,
        converted=converted,
        feature_pack=pack,
        chunks=tuple(
            submit_chunk(run, transcoder, model, converted, pack, chunk)
            for chunk in prompt_chunks(prompts)
        ),
    )
    return submit_dashboards(run, request, submitted)


def prompt_chunks(prompts: Sequence[str], size: int | None = None) -> list[tuple[str, ...]]:
    """The prompts in order, in as few chunks of at most ``size`` (``PROMPTS_PER_TASK``) as can
    be, of equal sizes within one: 33 prompts are chunks of 16 and 17, not 32 and 1."""
    if not prompts:
        return []
    n_chunks = -(-len(prompts) // (size or PROMPTS_PER_TASK))
    bounds = [len(prompts) * i // n_chunks for i in range(n_chunks + 1)]
    return [tuple(prompts[start:end]) for start, end in itertools.pairwise(bounds)]


def submit_chunk(
    run: RunContext,
    transcoder: TranscoderRun,
    model: ModelSpec,
    converted: ConvertedTranscoder,
    pack: str,
    prompts: tuple[str, ...],
) -> PromptChunk:
    """Submit the attribute, score and export stages of a chunk of prompts; the graphs are
    published naming ``pack`` (``flows.dashboards.feature_pack``) as their ``scan``."""
    parameters = transcoder.parameters
    thresholds = (parameters.node_threshold, parameters.edge_threshold)
    attribution = attribute_task.submit(
        list(prompts),
        model,
        converted,
        parameters.attribution,
        run.threads,
        run.store,
        run.settings.cuda_fast_path,
    )
    scored = score_task.submit(list(prompts), attribution, *thresholds, run.store)
    exported = export_task.submit(
        list(prompts),
        attribution,
        scored,
        [graph_slug(transcoder.source, converted.content_hash, prompt) for prompt in prompts],
        viewer_scan(converted.content_hash),  # the weights' name, in the stored graph files
        pack,  # the published graphs' scan: their feature pack's name
        *thresholds,
        run.store,
        run.settings.graph_files_dir,
    )
    return PromptChunk(prompts, ChunkStages(attribution, scored, exported))


# --- each item's outcome ------------------------------------------------------------------------


def score_items(transcoder: SubmittedTranscoder) -> list[ScoreItem]:
    """Each prompt of ``transcoder`` with its outcome, waiting for each chunk's stages once."""
    if not transcoder.chunks:  # it could not be prepared: every prompt fails with its error
        outcomes = [ItemOutcome(error=transcoder.error)] * len(transcoder.prompts)
    else:
        outcomes = [outcome for chunk in transcoder.chunks for outcome in chunk_outcomes(chunk)]
    return [
        ScoreItem(transcoder.transcoder, prompt, transcoder.recorded_as, outcome)
        for prompt, outcome in zip(transcoder.prompts, outcomes, strict=True)
    ]


def chunk_outcomes(chunk: PromptChunk) -> list[ItemOutcome]:
    """Each prompt's outcome in a chunk: its stages' results by name, up to the one that failed
    it (a whole stage that failed, which should not happen, fails every prompt)."""
    outcomes = [ItemOutcome() for _ in chunk.prompts]
    stages = chunk.stages
    for name, future in (
        ("attribution", stages.attribution),
        ("scored", stages.scored),
        ("exported", stages.exported),
    ):
        try:
            stage_results = list(future.result())
        except Exception as error:
            stage_results = [PromptFailure.of("chunk", error)] * len(chunk.prompts)
        for index, result in enumerate(stage_results):
            if outcomes[index].error is not None:
                continue
            if isinstance(result, PromptFailure):
                outcomes[index] = replace(outcomes[index], error=result.error)
            else:
                outcomes[index] = replace(outcomes[index], **{name: result})
    return outcomes


# --- record the run, report on it ----------------------------------------------------------


def record_run(
    run: RunContext, records: list[ScoreRecord], metrics: list[MetricsRecord] | None = None
) -> list[dict[str, Any]]:
    """Write the run, its records and its transcoder metrics in one go; returns the rows the CLI
    prints."""
    rows = [printed_row(record) for record in records]
    try:
        record_task(
            run.settings.score_store,
            run_info(run, records),
            quote(records),  # hundreds of rows: not for Prefect to walk field by field
            metrics=quote(metrics or []),
        )
    except Exception as error:
        raise RunNotRecordedError(
            f"the run was not recorded: {error}; a re-run will record it (its finished stages "
            "are cached)",
            rows,
        ) from error
    n_failed = sum(record.status != "ok" for record in records)
    get_run_logger().info(
        "recorded %d scores (%d failed) in %s",
        len(records),
        n_failed,
        run.settings.score_store.describe(),  # a lake's password masked
    )
    return rows


def warn_of_regressions(
    run: RunContext,
    rows: list[dict[str, Any]],
    margin: float,
    metrics: list[MetricsRecord] | None = None,
) -> None:
    """Publish the run's scores to the UI and warn of each transcoder whose mean replacement
    score dropped by more than ``margin`` since the suite's previous run."""
    transcoders = sorted({row["transcoder_source"] for row in rows})
    previous = (
        previous_suite_run_scores(
            run.settings.score_store, run.suite_name, run.flow_run_id, transcoders
        )
        if run.suite_name
        else None
    )
    for regression in publish(rows, run.suite_name, previous, margin, metrics or []):
        get_run_logger().warning(
            "regression: %s mean replacement score over %d prompts scored in both runs "
            "dropped by %.4f",
            regression.transcoder,
            regression.n_matched,
            regression.drop,
        )
