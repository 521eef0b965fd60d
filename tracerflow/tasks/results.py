"""What the stages hand each other: one small typed model per stage result, and the model spec.

    CheckpointSnapshot -> ConvertedTranscoder -> Attribution -> ScoredGraph -> ExportedGraph
    ConvertedTranscoder -> EvaluatedTranscoder, FeatureDashboards

Pydantic models, frozen and closed (no unknown fields): they pickle across Dask workers and
serialise to JSON. Each result says whether the artifact store already had it (``cached``). The
JSON files stages keep in the store (``snapshot.json``, ``attribution.json``, ``scores.json``,
``evaluation.json``) are these models' fields, written by ``file_text`` and read back by
``model_validate_json``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tracerflow.evaluation.results import TranscoderMetrics


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StageResult(_Frozen):
    """A stage's result: ``cached`` when the artifact store had it, False when computed now."""

    cached: bool = False


def file_text(value: BaseModel) -> str:
    """The JSON a stage file holds: ``value``'s fields but ``cached``, in their order."""
    return json.dumps(value.model_dump(exclude={"cached"}), indent=2)


class CheckpointSnapshot(StageResult):
    """download: a checkpoint folder on this machine and where it came from."""

    source: str  # what the user asked for (preset name, path or repo id)
    location: str  # the repo id or the absolute folder it resolved to
    revision: str | None
    commit_sha: str | None
    path: str
    content_hash: str  # sha256 over the checkpoint files' sha256
    format: str | None = None  # the registry's name of its format; None in older snapshots
    # the commit sha of each Hub file the checkpoint names in other repos, by its hf:// URI (a
    # circuit-tracer Hub config's `transcoders` list); None when its format names none
    file_commits: dict[str, str] | None = None


class ConvertedTranscoder(StageResult):
    """convert: the circuit-tracer files of a transcoder in the store, and its shape."""

    path: str
    key: str
    kind: Literal["clt", "plt"]
    n_layers: int
    d_model: int
    d_features: int
    activation: str  # "topk" | "jump_relu" | "relu"
    activation_params: dict[str, Any]  # {"k": 16}, ...
    dtype: str
    content_hash: str  # sha256 of the converted files


class ModelSpec(_Frozen):
    """The base model an attribution runs on: its name, what identifies its weights in keys, and
    the dtype and device it is assembled with."""

    name: str
    identity: str
    dtype: str
    device: str


class AttributionStats(_Frozen):
    """attribute's ``attribution.json``: how a graph was computed, and the model's shape."""

    batch_size: int
    threads: int
    fast_path: bool
    attribution_seconds: float | None
    phase_seconds: dict[str, float]
    peak_memory_bytes: int | None
    n_tokens: int
    device: str
    host: str
    model_n_layers: int
    model_d_model: int
    model_d_vocab: int
    model_n_ctx: int
    # Why circuit-tracer's own attribution computed the graph (what the fast path does not
    # cover, or an unvalidated device); None on the fast path, and in older stats files.
    stock_reason: str | None = None

    @property
    def path(self) -> str:
        """Which attribution computed the graph: ``fast`` or ``circuit-tracer`` (its own)."""
        return "fast" if self.fast_path else "circuit-tracer"


class Attribution(StageResult):
    """attribute: the graph's tensors file in the store, and how it was computed."""

    key: str
    graph_path: str
    stats: AttributionStats


class GraphScores(_Frozen):
    """score's ``scores.json``: replacement and completeness scores, unpruned and pruned."""

    replacement_score: float
    completeness_score: float
    pruned_replacement_score: float
    pruned_completeness_score: float
    n_active_features: int
    n_selected_features: int
    n_kept_features: int  # selected features that survive pruning
    n_logits: int
    logit_cumulative_prob: float
    n_pos: int


class ScoredGraph(StageResult):
    """score: a graph's scores and their key in the store."""

    key: str
    scores: GraphScores


class ExportedGraph(StageResult):
    """export: a graph's viewer file, published under ``slug`` in the graph-files folder."""

    key: str
    slug: str
    graph_files_path: str


class CorpusTokens(_Frozen):
    """The evaluation tokens as windowed: what two evaluations must share to be paired."""

    name: str
    n_windows: int
    n_tokens: int  # text tokens (BOS not counted); the metrics' N excludes BOS too
    sha256: str  # of the windows (tracerflow.corpus.CorpusSummary)


class EvaluationFile(_Frozen):
    """evaluate's ``evaluation.json``."""

    corpus: CorpusTokens
    metrics: TranscoderMetrics
    batch_tokens: int
    seconds: float


class EvaluatedTranscoder(StageResult):
    """evaluate: a transcoder's quality metrics, and its per-token values file in the store."""

    key: str
    corpus: CorpusTokens
    metrics: TranscoderMetrics
    seconds: float  # how long the evaluation took when it was computed
    per_token_path: str


class FeatureDashboards(StageResult):
    """dashboards: the transcoder's feature pack in the store and where it was published."""

    key: str
    scan: str
    corpus_sha256: str
    corpus_tokens: int  # text tokens of the corpus (BOS not counted)
    n_features: int  # records in the pack
    n_computed: int  # features streamed this run (0 when cached)
    published_path: str


class PromptFailure(_Frozen):
    """A prompt whose stage failed, in a chunk's results: the stage and the error as the prompt's
    row records it. Text, not the exception: it crosses Dask workers whatever the error was."""

    stage: str
    error: str  # "<error type>: <message>"

    @classmethod
    def of(cls, stage: str, error: BaseException) -> PromptFailure:
        return cls(stage=stage, error=error_text(error))


def error_text(error: BaseException) -> str:
    """An error as a failed row records it."""
    return f"{type(error).__name__}: {error}"
