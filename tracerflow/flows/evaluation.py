"""The scoring flow's evaluate step: each transcoder's quality metrics, once, after its prompts.

Which tokens (the first that is given): ``--eval-corpus`` (or the suite's ``eval_corpus``), the
preset's ``eval_corpus``, the run's prompts; ``--eval-tokens`` caps them. The evaluate task
waits for the transcoder's attribute, score and export futures (failed or not) so that it never
hooks the shared model while attribution uses it. A failed evaluation leaves the transcoder
without metrics rows; its scores are recorded all the same, then the run ends Failed naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from prefect.futures import PrefectFuture
from prefect.logging import get_run_logger
from prefect.utilities.annotations import allow_failure

from tracerflow.errors import TracerflowError
from tracerflow.flows.validation import RunRequest
from tracerflow.storage.metrics import MetricsRecord
from tracerflow.storage.records import ModelInfo, TranscoderInfo
from tracerflow.tasks.evaluate import EvaluationCorpus, evaluate_task
from tracerflow.tasks.results import EvaluatedTranscoder

if TYPE_CHECKING:
    from tracerflow.flows.score import RunContext, ScoreItem


class EvaluationError(TracerflowError):
    """A transcoder's quality metrics could not be computed (its scores are recorded)."""


@dataclass(frozen=True)
class TranscoderEvaluation:
    """One transcoder's submitted evaluation and what its rows are recorded under."""

    source: str
    recorded_as: TranscoderInfo
    model_name: str
    future: PrefectFuture[Any]


def evaluation_corpus(source: str, request: RunRequest) -> EvaluationCorpus:
    """The tokens a transcoder is evaluated on (precedence in the module docstring)."""
    from tracerflow.presets import PACKAGE_PREFIX, find_preset, resolve_package_path

    path = request.eval_corpus
    if path is None:
        preset = find_preset(source)
        if preset is not None and preset.eval_corpus is not None:
            path = preset.eval_corpus
            if path.startswith(PACKAGE_PREFIX):
                path = str(resolve_package_path(path))
    if path is None:
        return EvaluationCorpus.of_prompts(list(request.prompts), request.eval_tokens)
    return EvaluationCorpus.of_file(path, request.eval_tokens)


def submit_evaluations(
    run: RunContext, request: RunRequest, items: Sequence[ScoreItem]
) -> list[TranscoderEvaluation]:
    """Submit one evaluate task per transcoder that was prepared, after all its chunks' stages."""
    evaluations = []
    seen: set[str] = set()
    for item in items:
        if item.converted is None or item.model is None or item.transcoder.source in seen:
            continue
        seen.add(item.transcoder.source)
        chunks = {
            id(other.chunk): other.chunk
            for other in items
            if other.transcoder.source == item.transcoder.source and other.chunk
        }
        upstream = [allow_failure(future) for chunk in chunks.values() for future in chunk.stages]
        corpus = evaluation_corpus(item.transcoder.source, request)
        future = evaluate_task.submit(
            item.model, item.converted, corpus, run.store, wait_for=upstream
        )
        evaluations.append(
            TranscoderEvaluation(item.transcoder.source, item.recorded_as, item.model.name, future)
        )
    return evaluations


@dataclass(frozen=True)
class EvaluationOutcomes:
    """The metrics of each evaluation that succeeded, and the error of each that failed."""

    records: list[MetricsRecord]
    failures: list[tuple[str, BaseException]]

    def raise_if_any_failed(self) -> None:
        """End the run Failed, naming the first failed evaluation (the rest is recorded)."""
        if self.failures:
            source, error = self.failures[0]
            raise EvaluationError(
                f"{len(self.failures)} transcoder evaluation(s) failed; the scores were recorded. "
                f"First: {source}: {error}"
            )


def collect_evaluations(evaluations: Sequence[TranscoderEvaluation]) -> EvaluationOutcomes:
    """Wait for every evaluation; a failed one is logged and left out of the records."""
    records, failures = [], []
    for evaluation in evaluations:
        try:
            result: EvaluatedTranscoder = evaluation.future.result()
        except Exception as error:
            get_run_logger().error(
                "evaluation of %s failed, its metrics are not recorded: %s",
                evaluation.source,
                error,
            )
            failures.append((evaluation.source, error))
            continue
        records.append(metrics_record(evaluation, result))
    return EvaluationOutcomes(records, failures)


def metrics_record(evaluation: TranscoderEvaluation, result: EvaluatedTranscoder) -> MetricsRecord:
    return MetricsRecord(
        transcoder=evaluation.recorded_as,
        model=ModelInfo(
            name=evaluation.model_name, n_layers=None, d_model=None, d_vocab=None, n_ctx=None
        ),
        corpus_name=result.corpus.name,
        corpus_hash=result.corpus.sha256,
        corpus_n_tokens=result.corpus.n_tokens,
        corpus_n_windows=result.corpus.n_windows,
        evaluate_key=result.key,
        evaluation_seconds=result.seconds,
        metrics=result.metrics.model_dump(),
        created_at=datetime.now(UTC),
    )
