"""The scoring flow's evaluate step: each transcoder's quality metrics, once, after its prompts.

Which tokens (the first that is given): ``--eval-corpus`` (or the suite's ``eval_corpus``), the
preset's ``eval_corpus``, the run's prompts; ``--eval-tokens`` caps them. The evaluate task
waits for the transcoder's attribute, score and export futures (failed or not) so that it never
hooks the shared model while attribution uses it. A failed evaluation leaves the transcoder
without metrics rows; its scores are recorded all the same, then the run ends Failed naming it
(``flows.failures``).
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from prefect.utilities.annotations import allow_failure

from tracerflow.flows.run_types import RunContext, SubmittedTranscoder
from tracerflow.parameters import RunRequest
from tracerflow.presets import preset_file
from tracerflow.storage.metrics import MetricsRecord
from tracerflow.storage.records import ModelInfo
from tracerflow.tasks.evaluate import EvaluationCorpus, evaluate_task
from tracerflow.tasks.results import EvaluatedTranscoder


def evaluation_corpus(source: str, request: RunRequest) -> EvaluationCorpus:
    """The tokens a transcoder is evaluated on (precedence in the module docstring)."""
    path = request.eval_corpus or preset_file(source, "eval_corpus")
    if path is None:
        return EvaluationCorpus.of_prompts(list(request.prompts), request.eval_tokens)
    return EvaluationCorpus.of_file(path, request.eval_tokens)


def submit_evaluation(
    run: RunContext, request: RunRequest, transcoder: SubmittedTranscoder
) -> SubmittedTranscoder:
    """``transcoder`` with its evaluate task submitted, after all its chunks' stages (none for a
    transcoder that could not be prepared)."""
    if transcoder.converted is None or transcoder.model is None:
        return transcoder
    future = evaluate_task.submit(
        transcoder.model,
        transcoder.converted,
        evaluation_corpus(transcoder.source, request),
        run.store,
        wait_for=[allow_failure(future) for future in transcoder.all_stages()],
    )
    return replace(transcoder, evaluation=future)


def metrics_record(transcoder: SubmittedTranscoder, result: EvaluatedTranscoder) -> MetricsRecord:
    """The row of a transcoder's metrics, recorded under what its scores are recorded under."""
    return MetricsRecord(
        transcoder=transcoder.recorded_as,
        model=ModelInfo(
            name=transcoder.transcoder.model_name,
            n_layers=None,
            d_model=None,
            d_vocab=None,
            n_ctx=None,
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
