"""What the score database records of one transcoder evaluation (migration 004's
``transcoder_metrics``): one row per layer plus an all-layers row (``layer`` NULL).

The flow builds one ``MetricsRecord`` per evaluated transcoder; ``record_run`` writes its rows in
the same transaction as the run's scores (``metrics_rows``). The metrics arrive as the JSON of
``tracerflow.evaluation.TranscoderMetrics`` so that this module, like the rest of ``storage``,
needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tracerflow.hashing import canonical_json
from tracerflow.storage.records import ModelInfo, TranscoderInfo, stable_id, to_utc_naive

# The per-layer columns, read from each of the metrics' ``rows()``.
LAYER_COLUMNS = (
    "n_features", "fvu", "mse", "l0", "dead_share", "dense_1pct_share", "dense_10pct_share",
)  # fmt: skip
# The whole-model columns (``fidelity``), on the all-layers row only.
FIDELITY_COLUMNS = (
    "kl", "top1_agreement", "ce_original", "ce_replacement", "ce_ablated", "ce_loss_recovered",
    "n_predictions",
)  # fmt: skip


@dataclass(frozen=True)
class MetricsRecord:
    """One transcoder's evaluation in one run, with the provenance its score rows have."""

    transcoder: TranscoderInfo
    model: ModelInfo
    corpus_name: str  # the corpus file's path, or "prompts"
    corpus_hash: str  # sha256 of the windowed tokens: evaluations on equal hashes pair
    corpus_n_tokens: int
    corpus_n_windows: int
    evaluate_key: str  # the artifact store folder (evaluate/<key>) of the per-token values
    evaluation_seconds: float
    metrics: dict[str, Any]  # TranscoderMetrics.model_dump()
    created_at: datetime


def _nan_to_none(value: Any) -> Any:
    return None if isinstance(value, float) and value != value else value


def metrics_rows(flow_run_id: str, record: MetricsRecord) -> list[dict[str, object]]:
    """The ``transcoder_metrics`` rows of one record: each layer, then all layers (NULL)."""
    metrics = record.metrics
    fidelity = metrics["fidelity"]
    transcoder_id = record.transcoder.transcoder_id
    model_id = record.model.model_id
    rows = []
    for layer_metrics in [*metrics["layers"], metrics["all_layers"]]:
        layer = layer_metrics["layer"]
        all_layers = layer is None
        rows.append(
            {
                "metrics_id": stable_id(
                    "metrics",
                    flow_run_id,
                    transcoder_id,
                    model_id,
                    record.corpus_hash,
                    None if all_layers else str(layer),
                ),
                "flow_run_id": flow_run_id,
                "transcoder_id": transcoder_id,
                "model_id": model_id,
                "corpus_name": record.corpus_name,
                "corpus_hash": record.corpus_hash,
                "corpus_n_tokens": record.corpus_n_tokens,
                "corpus_n_windows": record.corpus_n_windows,
                "metrics_version": metrics["metrics_version"],
                "layer": layer,
                **{name: _nan_to_none(layer_metrics[name]) for name in LAYER_COLUMNS},
                "density_histogram_json": canonical_json(layer_metrics["density_histogram"]),
                **{
                    name: _nan_to_none(fidelity[name]) if all_layers else None
                    for name in FIDELITY_COLUMNS
                },
                "evaluate_key": record.evaluate_key,
                "evaluation_seconds": record.evaluation_seconds if all_layers else None,
                "created_at": to_utc_naive(record.created_at),
            }
        )
    return rows
