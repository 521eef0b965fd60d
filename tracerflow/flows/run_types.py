"""The scoring flow's types: what one flow run shares, each transcoder it submitted (its prompt
chunks, evaluation and dashboards, by name) and each transcoder × prompt item with its outcome.

Plain data, no Prefect calls: ``flows.score`` builds them, ``flows.records`` turns them into
score rows, ``flows.evaluation`` and ``flows.dashboards`` read them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from prefect.futures import PrefectFuture

from tracerflow.parameters import RunParameters
from tracerflow.settings import Settings
from tracerflow.storage.artifacts import ArtifactStore
from tracerflow.storage.records import TranscoderInfo
from tracerflow.tasks.results import (
    Attribution,
    ConvertedTranscoder,
    ExportedGraph,
    ModelSpec,
    ScoredGraph,
)


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


@dataclass(frozen=True)
class ChunkStages:
    """The futures of a chunk's per-prompt stages; each gives the chunk's results in order."""

    attribution: PrefectFuture[Any]
    scored: PrefectFuture[Any]
    exported: PrefectFuture[Any]

    def in_order(self) -> tuple[PrefectFuture[Any], ...]:
        return (self.attribution, self.scored, self.exported)


@dataclass(frozen=True)
class PromptChunk:
    """Some prompts of one transcoder, attributed, scored and exported by one task run each."""

    prompts: tuple[str, ...]
    stages: ChunkStages


@dataclass(frozen=True)
class ItemOutcome:
    """What an item's stages returned, as far as they got, and the error that stopped them."""

    attribution: Attribution | None = None
    scored: ScoredGraph | None = None
    exported: ExportedGraph | None = None
    error: str | None = None  # as the row records it


@dataclass(frozen=True)
class ScoreItem:
    """One transcoder × prompt: the transcoder its row is recorded under, and its outcome."""

    transcoder: TranscoderRun
    prompt: str
    recorded_as: TranscoderInfo
    outcome: ItemOutcome


@dataclass(frozen=True)
class SubmittedTranscoder:
    """One transcoder as submitted: its prompt chunks, its evaluation and its dashboards; or,
    when it could not be prepared (downloaded, converted), the error every prompt fails with."""

    transcoder: TranscoderRun
    prompts: tuple[str, ...]
    recorded_as: TranscoderInfo
    model: ModelSpec | None = None
    converted: ConvertedTranscoder | None = None
    feature_pack: str | None = None  # its dashboards' pack, the scan its graphs name
    chunks: tuple[PromptChunk, ...] = ()
    evaluation: PrefectFuture[Any] | None = None
    dashboards: PrefectFuture[Any] | None = None
    error: str | None = None  # why it could not be prepared, as its rows record it

    @property
    def source(self) -> str:
        return self.transcoder.source

    def all_stages(self) -> Iterator[PrefectFuture[Any]]:
        """Every per-prompt stage future of this transcoder."""
        for chunk in self.chunks:
            yield from chunk.stages.in_order()
