"""What one flow run hands to the score database: plain, frozen, JSON-serialisable records.

The flow builds a `RunInfo` and one `ScoreRecord` per transcoder × prompt × parameter set, then
calls `record_run`. Records carry values, never live objects (no tensors, no models), so they
pickle across Prefect tasks.

Identity: every normalised row gets a stable id, the sha256 of its identifying fields
(`stable_id`), so the same transcoder, model or prompt recorded by two runs maps to one row. The
fields are those every schema version recorded (a transcoder: source and weights; a model: its
name), so a series continues across migrations; the migrations compute the same bytes in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tracerflow.errors import StorageError
from tracerflow.hashing import canonical_json, sha256_text

TRANSCODER_KINDS = ("clt", "plt")
SCORE_STATUSES = ("ok", "failed")


def stable_id(entity: str, *identifying_fields: str | None) -> str:
    """sha256 (hex) of an entity name and its identifying fields; the same inputs, the same id.

    Each field is written as ``<UTF-8 byte length>:<text>`` (``NULL`` when missing) and the parts
    are joined by ``|``: unambiguous, and the same bytes DuckDB's ``strlen`` and ``sha256`` give,
    so the migrations compute these ids in literal SQL (their macro ``tf_id_field``).
    """
    parts = [entity]
    for value in identifying_fields:
        parts.append("NULL" if value is None else f"{len(value.encode())}:{value}")
    return sha256_text("|".join(parts))


def params_hash(params: dict[str, Any]) -> str:
    """The id of an attribution parameter set (``max_n_logits``, ``batch_size``, ...)."""
    return stable_id("params", canonical_json(params))


def to_utc_naive(moment: datetime) -> datetime:
    """The database stores UTC as naive TIMESTAMPs; naive inputs are taken to be UTC already."""
    if moment.tzinfo is None:
        return moment
    return moment.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class TranscoderInfo:
    """A converted transcoder, identified by where it came from and a hash of its weights.

    Facts not known (a transcoder that failed before it was ever converted) are None, never a
    placeholder.
    """

    source: str  # Hub repo id or local folder, as the user named it
    revision: str | None  # the ref the user asked for ("main", a tag), if any
    commit_sha: str | None  # the Hub commit it resolved to; None for local folders
    content_hash: str | None  # sha256 of the converted circuit-tracer files
    kind: str | None  # "clt" | "plt"
    n_layers: int | None
    d_model: int | None
    d_features: int | None
    activation: str | None  # "topk" | "jump_relu" | "relu"
    activation_params: dict[str, Any] | None = None  # {"k": 16}, ...; None: unknown
    # the format its files were read as (crosslayer-transcoder, circuit-tracer, ...); recorded
    # with each score row, not part of its identity; None: unknown
    format: str | None = None
    # the commit sha of each Hub file it was read from besides its source's own (a circuit-tracer
    # Hub config's hf:// files), by URI; recorded with each score row; None: none or unknown
    file_commits: dict[str, str] | None = None
    # the training step of a checkpoint scored as one of a training run's (tracerflow.training):
    # from its folder's name or its checkpoint; a fact of the transcoder, not part of its
    # identity (the same folder and weights are the same step); None: not known
    training_step: int | None = None

    def __post_init__(self) -> None:
        if self.kind is not None and self.kind not in TRANSCODER_KINDS:
            raise StorageError(
                f"transcoder {self.source!r}: kind must be one of {TRANSCODER_KINDS}, "
                f"got {self.kind!r}"
            )

    @property
    def transcoder_id(self) -> str:
        # The weights (and the name they are scored under) identify it; the revision is a movable
        # name and the same weights at another commit score the same. 001 recorded these two.
        return stable_id("transcoder", self.source, self.content_hash)


@dataclass(frozen=True)
class ModelInfo:
    """The base model the transcoders replace the MLPs of; its shape is None when not known
    (an item that failed before the model was assembled)."""

    name: str
    n_layers: int | None
    d_model: int | None
    d_vocab: int | None
    n_ctx: int | None

    @property
    def model_id(self) -> str:
        # A TransformerLens name pins the weights; the shape follows from it (001 had no shape).
        return stable_id("model", self.name)


@dataclass(frozen=True)
class RunInfo:
    """One Prefect flow run: who ran what, where, with which versions."""

    flow_run_id: str
    flow_name: str
    deployment_name: str | None
    suite_name: str | None
    started_at: datetime
    finished_at: datetime | None
    status: str
    tracerflow_version: str
    circuit_tracer_version: str
    torch_version: str
    device: str
    host: str

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> RunInfo:
        values = dict(data)
        for name in ("started_at", "finished_at"):
            if isinstance(values.get(name), str):
                values[name] = datetime.fromisoformat(values[name])
        return cls(**values)


def prompt_id(prompt: str) -> str:
    return stable_id("prompt", prompt)


@dataclass(frozen=True)
class ScoreRecord:
    """The scores of one transcoder on one prompt under one parameter set, in one run."""

    transcoder: TranscoderInfo
    model: ModelInfo
    prompt: str
    n_tokens: int | None  # None when it failed before tokenizing
    # max_n_logits, desired_logit_prob, max_feature_nodes, batch_size,
    # node_threshold, edge_threshold, offload, dtype
    params: dict[str, Any]
    status: str  # "ok" | "failed"
    error: str | None
    replacement_score: float | None
    completeness_score: float | None
    pruned_replacement_score: float | None
    pruned_completeness_score: float | None
    n_active_features: int | None
    n_selected_features: int | None
    n_logits: int | None
    logit_cumulative_prob: float | None
    n_pos: int | None
    phase_seconds: dict[str, float] | None
    attribution_seconds: float | None
    peak_memory_bytes: int | None
    attribution_threads: int | None  # torch's intra-op threads the attribution ran with
    graph_path: str | None
    graph_files_path: str | None
    slug: str | None
    created_at: datetime
    # "fast" or "circuit-tracer": which attribution computed the graph; None when none ran.
    attribution_path: str | None = None

    def __post_init__(self) -> None:
        if self.status not in SCORE_STATUSES:
            raise StorageError(
                f"score of {self.transcoder.source!r} on {self.prompt!r}: status must be one of "
                f"{SCORE_STATUSES}, got {self.status!r}"
            )

    @property
    def params_hash(self) -> str:
        return params_hash(self.params)

    @property
    def prompt_id(self) -> str:
        return prompt_id(self.prompt)
