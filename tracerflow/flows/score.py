"""The scoring flow: every transcoder × every prompt, from download to DuckDB.

    download -> convert -> (assemble) -> attribute -> score -> export -> record
                                                        (per transcoder) -> dashboards

Each stage is a cached task whose files live in the artifact store under a content key, so a
re-run recomputes exactly what changed (and nothing at all when nothing did). The per-prompt
stages run a chunk of a transcoder's prompts per task run (``PROMPTS_PER_TASK``), each prompt
keeping its own store entry per stage. A failing prompt
fails its own items with a clear message; every other item's scores are still recorded, then the
run ends Failed so the UI and the CLI say so. A transcoder's feature dashboards run once its
exports are done; a failed one fails the run only after every score is recorded
(``flows.dashboards``).
"""

from __future__ import annotations

import itertools
import platform
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import torch
from prefect import flow, runtime
from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import quote

import tracerflow
from tracerflow.attribution import default_threads
from tracerflow.errors import AttributionError, ConfigError, RunNotRecordedError, StorageError
from tracerflow.flows.dashboards import (
    SubmittedDashboards,
    dashboards_failures,
    raise_if_dashboards_failed,
    submit_dashboards,
)
from tracerflow.flows.evaluation import collect_evaluations, submit_evaluations
from tracerflow.flows.report import publish
from tracerflow.flows.validation import (
    RunRequest,
    model_for_source,
    request_of,
    validate_run_request,
)
from tracerflow.models import default_device, model_identity
from tracerflow.parameters import AttributionParams, RunParameters
from tracerflow.settings import Settings, get_settings
from tracerflow.storage.artifacts import ArtifactStore
from tracerflow.storage.metrics import MetricsRecord
from tracerflow.storage.queries import latest_transcoder, previous_suite_run_scores
from tracerflow.storage.records import ModelInfo, RunInfo, ScoreRecord, TranscoderInfo
from tracerflow.tasks.attribute import attribute_task
from tracerflow.tasks.convert import convert_task
from tracerflow.tasks.dashboards import viewer_scan
from tracerflow.tasks.download import download_task
from tracerflow.tasks.export import export_task, graph_slug
from tracerflow.tasks.record import record_task
from tracerflow.tasks.results import (
    Attribution,
    AttributionStats,
    CheckpointSnapshot,
    ConvertedTranscoder,
    ExportedGraph,
    GraphScores,
    ModelSpec,
    PromptFailure,
    ScoredGraph,
    error_text,
)
from tracerflow.tasks.score import score_task


@flow(
    name="score-transcoders",
    log_prints=True,
    # One item at a time in-process: attribution already uses every core, and two at once only
    # contend for memory. Pass a DaskTaskRunner (with_options) to fan out over workers.
    task_runner=ThreadPoolTaskRunner(max_workers=1),
)
def score_flow(
    transcoders: list[str],
    prompts: list[str],
    model: str | None = None,
    max_n_logits: int | None = None,
    desired_logit_prob: float | None = None,
    max_feature_nodes: int | None = None,
    batch_size: int | None = None,
    offload: str | None = None,
    node_threshold: float | None = None,
    edge_threshold: float | None = None,
    dtype: str = "float32",
    threads: int | None = None,
    device: str | None = None,
    suite_name: str | None = None,
    regression_margin: float = 0.02,
    corpus: str | None = None,
    all_features: bool = False,
    eval_corpus: str | None = None,
    eval_tokens: int | None = None,
) -> list[dict[str, Any]]:
    """Score every transcoder on every prompt and record the run; returns one row per item.

    ``threads`` is torch's intra-op thread count for attribution (None: the ``threads`` setting,
    else torch's default for this machine); it is resolved once, here, and recorded with every
    row, so the same inputs and settings on the same machine give the same numbers.
    ``corpus`` (a text or JSONL file) and ``all_features`` choose the feature dashboards' corpus
    and features (default: the preset's corpus, else the prompts; the graphs' features).
    """
    request = request_of(locals())
    # Deployments reach the flow without the CLI's checks: its parameters' checks, before anything
    # runs (a bad source or prompt fails its own items, recorded in their series).
    validate_run_request(request, check_items=False)
    run = start_run(request, suite_name)
    submitted = [submit_transcoder(run, source, request) for source in transcoders]
    items = [item for transcoder_items, _ in submitted for item in transcoder_items]
    evaluations = submit_evaluations(run, request, items)
    records = [score_record(item, outcome, run.threads) for item, outcome in outcomes_of(items)]
    evaluated = collect_evaluations(evaluations)
    rows = record_run(run, records, evaluated.records)
    warn_of_regressions(run, rows, regression_margin, evaluated.records)
    failed_dashboards = dashboards_failures([d for _, d in submitted if d is not None])
    raise_if_any_failed(run, records)
    evaluated.raise_if_any_failed()
    raise_if_dashboards_failed(failed_dashboards)
    return rows


# --- the run and its items ---------------------------------------------------------------------


@dataclass(frozen=True)
class RunContext:
    """What every item of one flow run shares: where it writes, and how it computes."""

    flow_run_id: str
    suite_name: str | None
    settings: Settings
    store: ArtifactStore
    dtype: str
    device: str
    threads: int  # torch's intra-op threads for attribution, the same for every item
    started_at: datetime


@dataclass(frozen=True)
class TranscoderRun:
    """One transcoder of the run: its source, the model it runs on, and its parameters."""

    source: str
    model_name: str
    parameters: RunParameters


# Prompts per task run of the attribute, score and export stages. A task run costs the Prefect
# API tens of milliseconds, more than a toy prompt's whole work; a chunk of 32 makes that cost
# small per prompt, while each prompt keeps its own store entry per stage (caching stays per
# prompt). The price: a Dask fan-out spreads chunks, not prompts, over its workers.
PROMPTS_PER_TASK = 32


@dataclass(frozen=True)
class PromptChunk:
    """Some prompts of one transcoder and the futures of their stages (attribute, score,
    export): one task run per stage, whose result lists each prompt's result in order."""

    prompts: tuple[str, ...]
    stages: tuple[PrefectFuture[Any], PrefectFuture[Any], PrefectFuture[Any]]


@dataclass(frozen=True)
class ScoreItem:
    """One transcoder × prompt: the transcoder its row is recorded under, and the chunk its
    stages run in (its place there: ``index``), or the error that failed it before they were
    submitted."""

    transcoder: TranscoderRun
    prompt: str
    recorded_as: TranscoderInfo
    chunk: PromptChunk | None = None
    index: int = 0
    error: str | None = None  # as the row records it
    model: ModelSpec | None = None  # with converted: None when the transcoder failed to prepare
    converted: ConvertedTranscoder | None = None


@dataclass(frozen=True)
class ItemOutcome:
    """What an item's stages returned, as far as they got, and the error that stopped them."""

    attribution: Attribution | None = None
    scored: ScoredGraph | None = None
    exported: ExportedGraph | None = None
    error: str | None = None  # as the row records it


def start_run(request: RunRequest, suite_name: str | None) -> RunContext:
    settings = get_settings()
    threads = attribution_threads(request.threads, settings.threads)
    get_run_logger().info("attribution runs at %d torch threads", threads)
    return RunContext(
        flow_run_id=str(runtime.flow_run.id),
        suite_name=suite_name,
        settings=settings,
        store=ArtifactStore(settings.artifacts_dir),
        dtype=request.dtype,
        device=request.device or str(default_device()),
        threads=threads,
        started_at=datetime.now(UTC),
    )


def attribution_threads(requested: int | None, configured: int | None) -> int:
    """The run's thread count: the flow's parameter, else the setting, else torch's default."""
    if requested is not None:
        threads = requested
    else:
        threads = configured if configured is not None else default_threads()
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    return threads


def run_parameters(source: str, request: RunRequest) -> RunParameters:
    """One transcoder's parameters: the request's where it gives one, else the preset's when the
    source is a preset, else the defaults. The batch size is resolved here (circuit-tracer's
    default when none is given), so a row whose attribution never ran records the batch size an
    ok row of the same run records."""
    from tracerflow.attribution import CIRCUIT_TRACER_BATCH_SIZE
    from tracerflow.presets import find_preset

    preset = find_preset(source)
    defaults = preset.run_parameters() if preset is not None else RunParameters()

    def given(name: str, default: Any) -> Any:
        value = getattr(request, name)
        return default if value is None else value

    attribution = defaults.attribution
    batch_size = given("batch_size", attribution.batch_size)
    return RunParameters(
        attribution=AttributionParams(
            max_n_logits=given("max_n_logits", attribution.max_n_logits),
            desired_logit_prob=given("desired_logit_prob", attribution.desired_logit_prob),
            max_feature_nodes=given("max_feature_nodes", attribution.max_feature_nodes),
            batch_size=CIRCUIT_TRACER_BATCH_SIZE if batch_size is None else batch_size,
            offload=request.offload,
        ),
        node_threshold=given("node_threshold", defaults.node_threshold),
        edge_threshold=given("edge_threshold", defaults.edge_threshold),
    )


# --- one transcoder: prepare it, submit its prompts ------------------------------------------


def submit_transcoder(
    run: RunContext, source: str, request: RunRequest
) -> tuple[list[ScoreItem], SubmittedDashboards | None]:
    """Download and convert one transcoder, then submit each prompt's stages and its dashboards;
    when it cannot be prepared, every one of its prompts fails with that error (no dashboards)."""
    logger = get_run_logger()
    transcoder = TranscoderRun(
        source=source,
        model_name=model_for_source(source, request.model),
        parameters=run_parameters(source, request),
    )
    logger.info("transcoder %s on model %s", source, transcoder.model_name)
    try:
        snapshot = download_task.submit(source, run.store).result()
        converted = convert_task.submit(snapshot, run.dtype, run.store).result()
    except Exception as error:
        logger.error("transcoder %s failed: %s", source, error)
        recorded_as = failed_transcoder_info(run, source)
        failed = error_text(error)
        return [
            ScoreItem(transcoder, prompt, recorded_as, error=failed) for prompt in request.prompts
        ], None
    model = ModelSpec(
        name=transcoder.model_name,
        identity=model_identity(transcoder.model_name),
        dtype=run.dtype,
        device=run.device,
    )
    recorded_as = transcoder_info(snapshot, converted)
    chunks = [
        submit_chunk(run, transcoder, model, converted, prompts)
        for prompts in prompt_chunks(request.prompts)
    ]
    items = [
        ScoreItem(transcoder, prompt, recorded_as, chunk, index, model=model, converted=converted)
        for chunk in chunks
        for index, prompt in enumerate(chunk.prompts)
    ]
    exports = [chunk.stages[2] for chunk in chunks]
    scan = viewer_scan(converted.content_hash)
    return items, submit_dashboards(run, source, model, converted, scan, exports, request)


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
    prompts: tuple[str, ...],
) -> PromptChunk:
    """Submit the attribute, score and export stages of a chunk of prompts."""
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
        viewer_scan(converted.content_hash),  # one per transcoder: its feature pack's name
        *thresholds,
        run.store,
        run.settings.graph_files_dir,
    )
    return PromptChunk(prompts, (attribution, scored, exported))


def transcoder_info(snapshot: CheckpointSnapshot, converted: ConvertedTranscoder) -> TranscoderInfo:
    """The transcoder a converted source's rows are recorded under: what conversion says."""
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
    )


def failed_transcoder_info(run: RunContext, source: str) -> TranscoderInfo:
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


# --- collect each item's outcome into a record ------------------------------------------------


def outcomes_of(items: Sequence[ScoreItem]) -> list[tuple[ScoreItem, ItemOutcome]]:
    """Each item with its outcome, waiting for each chunk's stages once."""
    by_chunk: dict[int, list[ItemOutcome]] = {}
    outcomes = []
    for item in items:
        if item.chunk is None:
            outcomes.append((item, ItemOutcome(error=item.error)))
            continue
        if id(item.chunk) not in by_chunk:
            by_chunk[id(item.chunk)] = chunk_outcomes(item.chunk)
        outcomes.append((item, by_chunk[id(item.chunk)][item.index]))
    return outcomes


def chunk_outcomes(chunk: PromptChunk) -> list[ItemOutcome]:
    """Each prompt's outcome in a chunk: its stages' results in order, up to the one that
    failed it (a whole stage that failed, which should not happen, fails every prompt)."""
    results: list[list[Any]] = [[] for _ in chunk.prompts]
    errors: list[str | None] = [None for _ in chunk.prompts]
    for future in chunk.stages:
        try:
            stage_results = future.result()
        except Exception as error:
            stage_results = [PromptFailure.of("chunk", error)] * len(chunk.prompts)
        for index, result in enumerate(stage_results):
            if errors[index] is not None:
                continue
            if isinstance(result, PromptFailure):
                errors[index] = result.error
            else:
                results[index].append(result)
    return [ItemOutcome(*given, error=error) for given, error in zip(results, errors, strict=True)]


def score_record(item: ScoreItem, outcome: ItemOutcome, run_threads: int) -> ScoreRecord:
    """An item's record, whether it succeeded or failed: a failed item records what its stages
    gave before the failure (attribution's facts), never scores of an item that failed."""
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
        graph_path=attribution.graph_path if attribution else None,
        graph_files_path=exported.graph_files_path if exported else None,
        slug=exported.slug if exported else None,
        created_at=datetime.now(UTC),
    )


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


# --- record the run, report on it ----------------------------------------------------------


def record_run(
    run: RunContext, records: list[ScoreRecord], metrics: list[MetricsRecord] | None = None
) -> list[dict[str, Any]]:
    """Write the run, its records and its transcoder metrics in one go; returns the rows the CLI
    prints."""
    rows = [_row_of(record) for record in records]
    try:
        record_task(
            run.settings.score_store,
            run_info(run, records),
            quote(records),  # hundreds of rows: not for Prefect to walk field by field
            use_server_limit=_server_in_use(),
            metrics=quote(metrics or []),
        )
    except Exception as error:
        raise RunNotRecordedError(
            f"the run was not recorded: {error}; a re-run will record it (its finished stages "
            "are cached)",
            rows,
        ) from error
    return rows


def run_info(run: RunContext, records: list[ScoreRecord]) -> RunInfo:
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
        torch_version=torch.__version__,
        device=run.device,
        host=socket.gethostname() or platform.node(),
    )


def run_status(records: list[ScoreRecord]) -> str:
    """``completed`` when every item succeeded, ``failed`` when none did, else ``partial``."""
    n_ok = sum(record.status == "ok" for record in records)
    if n_ok == len(records):
        return "completed"
    return "partial" if n_ok else "failed"


def warn_of_regressions(
    run: RunContext,
    rows: list[dict[str, Any]],
    margin: float,
    metrics: list[MetricsRecord] | None = None,
) -> None:
    """Publish the run's scores to the UI and warn of each transcoder whose mean replacement
    score dropped by more than ``margin`` since the suite's previous run."""
    transcoders = sorted({row["transcoder"] for row in rows})
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


def raise_if_any_failed(run: RunContext, records: list[ScoreRecord]) -> None:
    """End the run Failed, naming the first failure, when any item failed (all are recorded)."""
    failed = [record for record in records if record.status != "ok"]
    get_run_logger().info(
        "recorded %d scores (%d failed) in %s",
        len(records),
        len(failed),
        run.settings.score_store,
    )
    if failed:
        first = failed[0]
        raise AttributionError(
            f"{len(failed)} of {len(records)} items failed; the others were recorded. First: "
            f"{first.transcoder.source} on {first.prompt[:40]!r}: {first.error}"
        )


def _server_in_use() -> bool:
    """True when the flow talks to a real Prefect server (not the ephemeral, in-process one)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _row_of(record: ScoreRecord) -> dict[str, Any]:
    return {
        "transcoder": record.transcoder.source,
        "model": record.model.name,
        "params_hash": record.params_hash,
        "prompt": record.prompt,
        "status": record.status,
        "replacement": record.replacement_score,
        "completeness": record.completeness_score,
        "pruned_replacement": record.pruned_replacement_score,
        "pruned_completeness": record.pruned_completeness_score,
        "features": record.n_selected_features,
        "seconds": record.attribution_seconds,
        "slug": record.slug,
        "error": record.error,
    }
