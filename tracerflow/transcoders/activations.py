"""Exact activation functions of crosslayer-transcoder checkpoints, for circuit-tracer.

circuit-tracer's ReLU and JumpReLU cover ReLU, JumpReLU and BatchTopK exactly (with exported
thresholds); ``PerLayerTopK`` below is the one it lacks. Which maps to which: docs/checkpoints.md.
"""

from __future__ import annotations

import torch
from torch import nn


class PerLayerTopK(nn.Module):
    """Per token and per layer: keep the k largest pre-activations (signed), then ReLU them.

    Works on any tensor whose last dimension is the feature dimension, e.g. ``[n_pos, F]``
    (one layer) or ``[n_layers, n_pos, F]`` (all layers): top-k is taken along the last axis.
    """

    def __init__(self, k: int) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"PerLayerTopK needs k >= 1, got {k}")
        self.k = int(k)

    def forward(self, pre_activations: torch.Tensor) -> torch.Tensor:
        values, indices = torch.topk(pre_activations, self.k, dim=-1, sorted=False)
        return torch.zeros_like(pre_activations).scatter(-1, indices, torch.relu(values))

    def extra_repr(self) -> str:
        return f"k={self.k}"
