"""One call from a model and a corpus to a feature pack, computing only what a pack lacks.

``build_feature_pack`` is what a pipeline stage wraps: it reads the features an earlier pack
(same transcoder, model, corpus and ``DashboardConfig``) already holds, streams the corpus for
the missing ones only, and writes the union. A feature's record depends on nothing but the
feature, the corpus and the config, so the merged pack is byte for byte the pack a single run
over every feature writes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tracerflow.dashboards.compute import collect_dashboards, wanted_features
from tracerflow.dashboards.config import DashboardConfig
from tracerflow.dashboards.pack import pack_features, read_feature_pack, write_feature_pack
from tracerflow.dashboards.records import dashboard_records


@dataclass(frozen=True)
class FeaturePackResult:
    """What ``build_feature_pack`` wrote."""

    pack_dir: Path
    n_features: int  # records in the pack
    n_computed: int  # features streamed this time
    n_reused: int  # records taken from the earlier pack
    corpus_tokens: int  # tokens counted this time (0 when nothing was missing)
    corpus_sequences: int


def build_feature_pack(
    model: Any,
    batches: Iterable[torch.Tensor],
    pack_dir: Path,
    *,
    transcoder_id: str,
    features: Iterable[tuple[int, int]] | None = None,
    previous_pack: Path | None = None,
    config: DashboardConfig | None = None,
    pad_token_id: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> FeaturePackResult:
    """Write into ``pack_dir`` the pack of ``features`` (``None``: all) plus ``previous_pack``'s.

    Args:
        model: a circuit-tracer ``ReplacementModel``.
        batches: token batches ``[batch, seq]``, BOS at position 0; read only if a wanted
            feature is missing from ``previous_pack``.
        pack_dir: the folder to write (created); may not be ``previous_pack``.
        transcoder_id: the records' ``transcoder_id`` (the graphs' ``scan``).
        features: ``(layer, index)`` pairs; ``None`` for every feature of the transcoder.
        previous_pack: a pack computed on the same corpus with the same config, or ``None``.
        config, pad_token_id, progress: as in ``collect_dashboards``.
    """
    n_layers, d_transcoder = model.cfg.n_layers, int(model.transcoders.d_transcoder)
    wanted = wanted_features(n_layers, d_transcoder, features)
    have = pack_features(previous_pack) if previous_pack is not None else set()
    missing = [feature for feature in wanted if feature not in have]
    records = read_feature_pack(previous_pack) if previous_pack is not None and have else {}
    n_tokens = n_sequences = 0
    if missing:
        state = collect_dashboards(
            model,
            batches,
            missing,
            config=config,
            pad_token_id=pad_token_id,
            progress=progress,
        )
        records.update(dashboard_records(state, model, transcoder_id))
        n_tokens, n_sequences = state.n_tokens, state.n_sequences
    write_feature_pack(pack_dir, records, n_layers, d_transcoder)
    return FeaturePackResult(
        pack_dir=pack_dir,
        n_features=len(records),
        n_computed=len(missing),
        n_reused=len(records) - len(missing),
        corpus_tokens=n_tokens,
        corpus_sequences=n_sequences,
    )
