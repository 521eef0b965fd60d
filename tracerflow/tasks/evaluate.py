"""Stage 6, evaluate: a transcoder's quality metrics on a token corpus (``tracerflow.evaluation``).

Once per transcoder of a run, after its prompts. The tokens are a corpus file (``--eval-corpus``,
a suite's or a preset's ``eval_corpus``) or the run's prompts, capped at ``max_tokens``. Keyed by
what determines the numbers without loading a model: the converted transcoder's content hash,
the model identity (which fixes the tokenizer and ``n_ctx``), the corpus *source* content (the
file's sha256, or the prompt texts), the cap, the batch size, dtype, device and
``METRICS_VERSION``. The folder holds ``evaluation.json`` (``EvaluationFile``: the metrics and the
sha256 of the tokens as windowed, which ``compare`` pairs on) and ``per_token.safetensors``
(``PerTokenValues``, corpus order), never a pickle.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from prefect.logging import get_run_logger

from tracerflow.cells import cell_text
from tracerflow.corpus import DEFAULT_BATCH_TOKENS, TokenCorpus, Tokenizer
from tracerflow.evaluation import METRICS_VERSION
from tracerflow.fsutil import sha256_file
from tracerflow.hashing import sha256_json
from tracerflow.storage.artifacts import ArtifactStore, stage_key
from tracerflow.tasks.assemble import MODEL_LOCK, assembled_model
from tracerflow.tasks.progress import ProgressArtifact
from tracerflow.tasks.results import (
    ConvertedTranscoder,
    CorpusTokens,
    EvaluatedTranscoder,
    EvaluationFile,
    ModelSpec,
    _Frozen,
    file_text,
)
from tracerflow.tasks.stage import stage_task

CODE_VERSION = "1"
EVALUATION_FILE = "evaluation.json"
PER_TOKEN_FILE = "per_token.safetensors"
PROMPTS_CORPUS_NAME = "prompts"


class EvaluationCorpus(_Frozen):
    """The evaluation tokens as asked for: a corpus file or the run's prompts, at most
    ``max_tokens`` text tokens. ``source_hash`` identifies the content without a tokenizer."""

    name: str  # the file's absolute path, or "prompts"
    path: str | None = None
    texts: list[str] | None = None
    max_tokens: int | None = None
    source_hash: str

    @classmethod
    def of_file(cls, path: str | Path, max_tokens: int | None) -> EvaluationCorpus:
        resolved = Path(path).expanduser().resolve()
        return cls(
            name=str(resolved),
            path=str(resolved),
            max_tokens=max_tokens,
            source_hash=sha256_file(resolved),
        )

    @classmethod
    def of_prompts(cls, prompts: list[str], max_tokens: int | None) -> EvaluationCorpus:
        return cls(
            name=PROMPTS_CORPUS_NAME,
            texts=list(prompts),
            max_tokens=max_tokens,
            source_hash=sha256_json(list(prompts)),
        )

    def tokens(self, tokenizer: Tokenizer, n_ctx: int) -> TokenCorpus:
        """The streamed corpus under ``tokenizer`` (the model's Hugging Face tokenizer)."""
        if self.path is not None:
            return TokenCorpus.from_file(self.path, tokenizer, n_ctx, max_tokens=self.max_tokens)
        return TokenCorpus.from_texts(
            self.texts or [], tokenizer, n_ctx, max_tokens=self.max_tokens
        )


def evaluate_key(
    model: ModelSpec,
    converted: ConvertedTranscoder,
    corpus: EvaluationCorpus,
    batch_tokens: int,
) -> str:
    return stage_key(
        "evaluate",
        CODE_VERSION,
        metrics_version=METRICS_VERSION,
        model=model.identity,
        transcoder=converted.content_hash,
        corpus=corpus.source_hash,
        max_tokens=corpus.max_tokens,
        # Another batch size rounds forward passes differently (~1e-7): part of the key so that
        # a cached result is the bits a recomputation gives.
        batch_tokens=batch_tokens,
        dtype=model.dtype,
        device=model.device,
    )


def evaluate_converted(
    model: ModelSpec,
    converted: ConvertedTranscoder,
    corpus: EvaluationCorpus,
    store: ArtifactStore,
    batch_tokens: int = DEFAULT_BATCH_TOKENS,
    progress: Callable[[int, int | None], None] | None = None,
) -> EvaluatedTranscoder:
    """Evaluate ``converted`` on ``model`` over ``corpus`` unless the store has the result."""
    key = evaluate_key(model, converted, corpus, batch_tokens)

    def write(out_dir: Path) -> None:
        from safetensors.torch import save_file

        from tracerflow.evaluation import evaluate_transcoder

        replacement_model = assembled_model(model.name, converted.path, model.dtype, model.device)
        tokens = corpus.tokens(replacement_model.tokenizer, int(replacement_model.cfg.n_ctx))
        summary = tokens.summary()
        started = time.perf_counter()
        # Hooks are model-global: never while attribution (or another stage) uses this model.
        with MODEL_LOCK:
            evaluation = evaluate_transcoder(
                replacement_model,
                tokens.batches(batch_tokens),
                total_tokens=summary.n_text_tokens,
                progress=progress,
                keep_per_token=True,
            )
        record = EvaluationFile(
            corpus=CorpusTokens(
                name=corpus.name,
                n_windows=summary.n_windows,
                n_tokens=summary.n_text_tokens,
                sha256=summary.sha256,
            ),
            metrics=evaluation.metrics,
            batch_tokens=batch_tokens,
            seconds=time.perf_counter() - started,
        )
        assert evaluation.per_token is not None  # keep_per_token=True
        save_file(
            {name: t.contiguous() for name, t in evaluation.per_token.tensors().items()},
            str(out_dir / PER_TOKEN_FILE),
        )
        (out_dir / EVALUATION_FILE).write_text(file_text(record))

    folder, cached = store.get_or_compute("evaluate", key, write)
    record = EvaluationFile.model_validate_json((folder / EVALUATION_FILE).read_text())
    return EvaluatedTranscoder(
        key=key,
        corpus=record.corpus,
        metrics=record.metrics,
        seconds=record.seconds,
        per_token_path=str(folder / PER_TOKEN_FILE),
        cached=cached,
    )


@stage_task("evaluate")
def evaluate_task(
    model: ModelSpec,
    converted: ConvertedTranscoder,
    corpus: EvaluationCorpus,
    store: ArtifactStore,
) -> EvaluatedTranscoder:
    logger = get_run_logger()
    logger.info("evaluating %s on %s (%s)", converted.key[:12], model.name, corpus.name)
    # Shown from the start, and at most every 2 s: an API call per batch would slow a small
    # corpus down.
    artifact = ProgressArtifact(
        f"evaluation of {converted.key[:12]} on {corpus.name}", every_seconds=2.0
    )
    artifact.show(0.0, now=True)

    def report(done: int, total: int | None) -> None:
        if total and artifact.show(100.0 * done / total):
            logger.info("evaluation tokens: %d of %d", done, total)

    result = evaluate_converted(model, converted, corpus, store, progress=report)
    artifact.finish()
    everything = result.metrics.all_layers
    logger.info(
        "evaluated on %d tokens in %.1f s: FVU %.4f, L0 %.1f, KL %.4f, CE recovered %s",
        # CE recovered is None when zero-ablation changes no loss (docs/metrics.md)
        result.corpus.n_tokens,
        result.seconds,
        everything.fvu,
        everything.l0,
        result.metrics.fidelity.kl,
        cell_text(result.metrics.fidelity.ce_loss_recovered) or "undefined",
    )
    return result
