"""The scoring flow: every transcoder × every prompt, from download to DuckDB.

    download -> convert -> (assemble) -> attribute -> score -> export -> record

Each stage is a cached task whose files live in the artifact store under a content key, so a
re-run recomputes exactly what changed (and nothing at all when nothing did). A failing prompt
fails its own items with a clear message; every other item's scores are still recorded, then the
run ends Failed so the UI and the CLI say so.
"""

from __future__ import annotations

import platform
import socket
from dataclasses import asdict
from datetime import UTC, datetime
from importlib.metadata import version
from typing import Any

import torch
from prefect import flow, runtime
from prefect.logging import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

import tracerflow
from tracerflow.attribution import CIRCUIT_TRACER_BATCH_SIZE, default_threads
from tracerflow.errors import AttributionError, ConfigError, RunNotRecordedError, StorageError
from tracerflow.flows.report import publish
from tracerflow.flows.validation import DEFAULT_MODEL, request_of, validate_run_request
from tracerflow.models import default_device, model_identity
from tracerflow.settings import get_settings
from tracerflow.storage.artifacts import ArtifactStore
from tracerflow.storage.queries import latest_transcoder, previous_suite_run_scores
from tracerflow.storage.records import ModelInfo, RunInfo, ScoreRecord, TranscoderInfo
from tracerflow.tasks.attribute import AttributionParams, attribute_task
from tracerflow.tasks.convert import convert_task
from tracerflow.tasks.download import download_task
from tracerflow.tasks.export import export_task, slug_label
from tracerflow.tasks.record import record_task
from tracerflow.tasks.score import score_task

# The reference notebook's settings; presets may set their own. The batch size is resolved here
# (circuit-tracer's default) rather than inside attribution, so a row whose attribution never ran
# records the batch size an ok row of the same run records.
NOTEBOOK_DEFAULTS: dict[str, Any] = {
    "max_n_logits": 10,
    "desired_logit_prob": 0.95,
    "max_feature_nodes": 8192,
    "batch_size": CIRCUIT_TRACER_BATCH_SIZE,
    "node_threshold": 0.8,
    "edge_threshold": 0.98,
}


def run_parameters(source: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The attribution/export parameters for one transcoder: the user's overrides, else the
    preset's defaults when the source is a preset, else the notebook's."""
    from tracerflow.presets import find_preset

    preset = find_preset(source)
    defaults = dict(NOTEBOOK_DEFAULTS)
    if preset is not None:
        defaults.update({name: getattr(preset, name) for name in NOTEBOOK_DEFAULTS})
    resolved = {
        name: overrides.get(name) if overrides.get(name) is not None else value
        for name, value in defaults.items()
    }
    if resolved["batch_size"] is None:  # a preset without one: circuit-tracer's default
        resolved["batch_size"] = CIRCUIT_TRACER_BATCH_SIZE
    return resolved


def model_for(source: str, model: str | None) -> str:
    from tracerflow.presets import find_preset

    if model:
        return model
    preset = find_preset(source)
    return preset.model if preset is not None else DEFAULT_MODEL


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
) -> list[dict[str, Any]]:
    """Score every transcoder on every prompt and record the run; returns one row per item.

    ``threads`` is torch's intra-op thread count for attribution (None: the ``threads`` setting,
    else torch's default for this machine); it is resolved once, here, and recorded with every
    row, so the same inputs and settings on the same machine give the same numbers.
    """
    # Deployments reach the flow without the CLI's checks: its parameters' checks, before anything
    # runs (a bad source or prompt fails its own items, recorded in their series).
    validate_run_request(request_of(locals()), check_items=False)
    logger = get_run_logger()
    settings = get_settings()
    store = ArtifactStore(settings.artifacts_dir)
    device = device or str(default_device())
    threads = attribution_threads(threads, settings.threads)
    logger.info("attribution runs at %d torch threads", threads)
    started_at = datetime.now(UTC)
    overrides = {
        "max_n_logits": max_n_logits,
        "desired_logit_prob": desired_logit_prob,
        "max_feature_nodes": max_feature_nodes,
        "batch_size": batch_size,
        "node_threshold": node_threshold,
        "edge_threshold": edge_threshold,
    }
    items: list[dict[str, Any]] = []
    for source in transcoders:
        parameters = run_parameters(source, overrides)
        model_name = model_for(source, model)
        logger.info("transcoder %s on model %s", source, model_name)
        params = attribution_params(parameters, offload)
        base = {
            "source": source,
            "model_name": model_name,
            "parameters": parameters,
            "params": params,
            "threads": threads,
        }
        try:
            snapshot = download_task.submit(source, store).result()
            converted = convert_task.submit(snapshot, dtype, store).result()
        except Exception as error:  # every prompt of this transcoder fails with this error
            logger.error("transcoder %s failed: %s", source, error)
            # Its weights are unknown now: record under the last transcoder scored under this
            # source, so the failure stays in that series.
            try:
                known = latest_transcoder(settings.database_path, source)
            except StorageError as lookup_error:  # the rows are still recorded, under less
                logger.warning("could not look up %s's last transcoder: %s", source, lookup_error)
                known = None
            items += [
                {**base, "prompt": prompt, "error": error, "known_transcoder": known}
                for prompt in prompts
            ]
            continue
        model_spec = {
            "name": model_name,
            "identity": model_identity(model_name),
            "dtype": dtype,
            "device": device,
        }
        scan = f"tracerflow-{converted['content_hash'][:12]}"
        for prompt in prompts:
            attribution = attribute_task.submit(
                prompt, model_spec, converted, params, threads, store
            )
            scores = score_task.submit(
                attribution, parameters["node_threshold"], parameters["edge_threshold"], store
            )
            slug = f"{slug_label(source)}-{converted['content_hash'][:8]}-{_prompt_hash(prompt)}"
            export = export_task.submit(
                attribution,
                scores,
                slug,
                scan,
                parameters["node_threshold"],
                parameters["edge_threshold"],
                store,
                settings.graph_files_dir,
            )
            items.append(
                {
                    **base,
                    "prompt": prompt,
                    "snapshot": snapshot,
                    "converted": converted,
                    "futures": (attribution, scores, export),
                }
            )

    records = [_record_of(item) for item in items]
    run = RunInfo(
        flow_run_id=str(runtime.flow_run.id),
        flow_name=str(runtime.flow_run.flow_name),
        deployment_name=runtime.deployment.name,
        suite_name=suite_name,
        started_at=started_at,
        finished_at=datetime.now(UTC),
        status=run_status(records),
        tracerflow_version=tracerflow.__version__,
        circuit_tracer_version=version("circuit-tracer"),
        torch_version=torch.__version__,
        device=device,
        host=socket.gethostname() or platform.node(),
    )
    rows = [_row_of(record) for record in records]
    try:
        record_task(settings.database_path, run, records, use_server_limit=_server_in_use())
    except Exception as error:
        raise RunNotRecordedError(
            f"the run was not recorded: {error}; a re-run will record it (its finished stages "
            "are cached)",
            rows,
        ) from error
    previous = (
        previous_suite_run_scores(settings.database_path, suite_name, run.flow_run_id)
        if suite_name
        else None
    )
    for regression in publish(rows, suite_name, previous, regression_margin):
        logger.warning(
            "regression: %s mean replacement score over %d prompts scored in both runs "
            "dropped by %.4f",
            regression.transcoder,
            regression.n_matched,
            regression.drop,
        )
    failed = [r for r in records if r.status != "ok"]
    logger.info(
        "recorded %d scores (%d failed) in %s", len(records), len(failed), settings.database_path
    )
    if failed:
        raise AttributionError(
            f"{len(failed)} of {len(records)} items failed; the others were recorded. First: "
            f"{failed[0].transcoder.source} on {failed[0].prompt[:40]!r}: {failed[0].error}"
        )
    return rows


def run_status(records: list[ScoreRecord]) -> str:
    """``completed`` when every item succeeded, ``failed`` when none did, else ``partial``."""
    n_ok = sum(record.status == "ok" for record in records)
    if n_ok == len(records):
        return "completed"
    return "partial" if n_ok else "failed"


def attribution_threads(requested: int | None, configured: int | None) -> int:
    """The run's thread count: the flow's parameter, else the setting, else torch's default."""
    if requested is not None:
        threads = requested
    else:
        threads = configured if configured is not None else default_threads()
    if threads < 1:
        raise ConfigError(f"threads must be >= 1, got {threads}")
    return threads


def _prompt_hash(prompt: str) -> str:
    import hashlib

    return hashlib.sha256(prompt.encode()).hexdigest()[:8]


def _server_in_use() -> bool:
    """True when the flow talks to a real Prefect server (not the ephemeral, in-process one)."""
    from prefect.settings import PREFECT_API_URL

    return bool(PREFECT_API_URL.value())


def _record_of(item: dict[str, Any]) -> ScoreRecord:
    """Wait for one item's tasks and turn the outcome, success or failure, into a record."""
    error: BaseException | None = item.get("error")
    attribution = scores = export = None
    if error is None:
        try:
            attribution, scores, export = (future.result() for future in item["futures"])
        except Exception as raised:
            error = raised
    stats = attribution or {}
    model = ModelInfo(
        name=item["model_name"],
        n_layers=stats.get("model_n_layers"),
        d_model=stats.get("model_d_model"),
        d_vocab=stats.get("model_d_vocab"),
        n_ctx=stats.get("model_n_ctx"),
    )
    ok = error is None and scores is not None and export is not None
    return ScoreRecord(
        transcoder=transcoder_of(item),
        model=model,
        prompt=item["prompt"],
        n_tokens=stats.get("n_tokens"),
        params=recorded_params(item["params"], item["parameters"]),
        status="ok" if ok else "failed",
        error=None if ok else _error_text(error),
        replacement_score=scores["replacement_score"] if ok else None,
        completeness_score=scores["completeness_score"] if ok else None,
        pruned_replacement_score=scores["pruned_replacement_score"] if ok else None,
        pruned_completeness_score=scores["pruned_completeness_score"] if ok else None,
        n_active_features=scores["n_active_features"] if ok else None,
        n_selected_features=scores["n_selected_features"] if ok else None,
        n_logits=scores["n_logits"] if ok else None,
        logit_cumulative_prob=scores["logit_cumulative_prob"] if ok else None,
        n_pos=scores["n_pos"] if ok else None,
        phase_seconds=stats.get("phase_seconds"),
        attribution_seconds=stats.get("attribution_seconds"),
        peak_memory_bytes=stats.get("peak_memory_bytes"),
        attribution_threads=stats.get("threads", item["threads"]),
        graph_path=stats.get("graph_path"),
        graph_files_path=export["graph_files_path"] if ok else None,
        slug=export["slug"] if ok else None,
        created_at=datetime.now(UTC),
    )


def transcoder_of(item: dict[str, Any]) -> TranscoderInfo:
    """The transcoder an item's row is recorded under. Converted: what conversion says. Failed
    before that: the last transcoder recorded under its source (its series), else only what is
    known, every unknown fact None (never a placeholder that would start a series of its own)."""
    converted = item.get("converted")
    snapshot = item.get("snapshot") or {}
    if converted is None and item.get("known_transcoder") is not None:
        return item["known_transcoder"]
    converted = converted or {}
    return TranscoderInfo(
        source=item["source"],
        revision=snapshot.get("revision"),
        commit_sha=snapshot.get("commit_sha"),
        content_hash=converted.get("content_hash"),
        kind=converted.get("kind"),
        n_layers=converted.get("n_layers"),
        d_model=converted.get("d_model"),
        d_features=converted.get("d_features"),
        activation=converted.get("activation"),
        activation_params=converted.get("activation_params", {}),
    )


def attribution_params(parameters: dict[str, Any], offload: str | None) -> AttributionParams:
    """The attribute stage's parameters out of ``run_parameters``' resolved set."""
    return AttributionParams(
        max_n_logits=parameters["max_n_logits"],
        desired_logit_prob=parameters["desired_logit_prob"],
        max_feature_nodes=parameters["max_feature_nodes"],
        batch_size=parameters["batch_size"],
        offload=offload,
    )


def recorded_params(params: AttributionParams, parameters: dict[str, Any]) -> dict[str, Any]:
    """The parameter set a row records (and hashes): the same for an item that failed as for
    one that succeeded, because it is fixed before anything runs."""
    return {**asdict(params), **parameters}


def _error_text(error: BaseException | None) -> str:
    if error is None:
        return "unknown error"
    return f"{type(error).__name__}: {error}"


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
