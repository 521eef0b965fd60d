"""What the ``evaluate`` stage records: typed, JSON-ready transcoder quality metrics.

Definitions (formulas, positions, aggregation) are in ``docs/metrics.md``. ``METRICS_VERSION``
changes whenever a definition does; it belongs in every cache key of a stored evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

METRICS_VERSION = "1"

# Fixed log10-density bins, so that histograms of any two runs line up: 28 bins of 0.25 from
# 1e-7 to 1. Densities below 1e-7 count in the first bin, a density of 1 in the last; dead
# features (density 0) are in no bin (see ``dead_share``).
DENSITY_LOG10_LOW = -7.0
DENSITY_LOG10_BIN_WIDTH = 0.25
DENSITY_N_BINS = 28
DENSITY_LOG10_EDGES: tuple[float, ...] = tuple(
    DENSITY_LOG10_LOW + DENSITY_LOG10_BIN_WIDTH * i for i in range(DENSITY_N_BINS + 1)
)


class LayerMetrics(BaseModel):
    """Reconstruction and sparsity of one layer (``layer`` set) or of all layers (``None``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    layer: int | None
    n_features: int
    fvu: float  # Σ‖y−ŷ‖² / Σ‖y−ȳ‖²; pooled over layers in the all-layers row
    mse: float  # Σ‖y−ŷ‖² / N: mean squared error per token (summed over layers: all-layers)
    l0: float  # mean active features per token (summed over layers: all-layers)
    dead_share: float  # features never active on the evaluation tokens
    dense_1pct_share: float  # features active on more than 1 % of the tokens
    dense_10pct_share: float  # ... more than 10 %
    density_histogram: list[int]  # live features per log10-density bin (DENSITY_LOG10_EDGES)


class ReplacementFidelity(BaseModel):
    """The whole model with every MLP replaced by its reconstruction at once, no error terms."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kl: float  # mean over tokens of KL(p_original ‖ p_replacement), nats
    top1_agreement: float  # share of tokens whose argmax next token is the same
    ce_original: float  # mean next-token cross-entropy, nats
    ce_replacement: float
    ce_ablated: float  # every MLP output zeroed
    # (ce_ablated − ce_replacement) / (ce_ablated − ce_original); None when ablating changes
    # nothing (the denominator is 0)
    ce_loss_recovered: float | None
    n_predictions: int  # tokens with a next token in their window (the CE averages)


class TranscoderMetrics(BaseModel):
    """One (transcoder, model, evaluation tokens) evaluation."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metrics_version: str = METRICS_VERSION
    kind: Literal["clt", "plt"]
    n_layers: int
    d_features: int
    n_windows: int
    n_tokens: int  # evaluated positions: real, non-BOS
    layers: list[LayerMetrics]
    all_layers: LayerMetrics
    fidelity: ReplacementFidelity
    density_log10_edges: list[float] = list(DENSITY_LOG10_EDGES)

    def rows(self) -> list[LayerMetrics]:
        """One row per layer, then the all-layers row (``layer`` None): a table's rows."""
        return [*self.layers, self.all_layers]


@dataclass(frozen=True)
class PerTokenValues:
    """Per evaluated token, in corpus order (window by window, position by position), for
    paired comparisons of two transcoders on the same tokens. ``[n_tokens]`` unless noted;
    the cross-entropies are NaN where the token has no next token in its window."""

    kl: torch.Tensor
    top1_agree: torch.Tensor  # bool
    ce_original: torch.Tensor
    ce_replacement: torch.Tensor
    ce_ablated: torch.Tensor
    squared_error: torch.Tensor  # [n_layers, n_tokens] ‖y−ŷ‖²
    active: torch.Tensor  # [n_layers, n_tokens] int: active features (L0 of the token)

    def tensors(self) -> dict[str, torch.Tensor]:
        """Name -> tensor, for ``safetensors.torch.save_file``."""
        return {
            "kl": self.kl,
            "top1_agree": self.top1_agree,
            "ce_original": self.ce_original,
            "ce_replacement": self.ce_replacement,
            "ce_ablated": self.ce_ablated,
            "squared_error": self.squared_error,
            "active": self.active,
        }


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate_transcoder`` returns: the metrics, and the per-token values if asked."""

    metrics: TranscoderMetrics
    per_token: PerTokenValues | None
