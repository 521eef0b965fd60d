"""Transcoder quality on a token corpus, streamed: reconstruction, sparsity, replacement fidelity.

Per batch, three forward passes of the ``ReplacementModel``:
  1. original: caches every layer's transcoder input and MLP output (circuit-tracer's
     ``feature_input_hook`` / ``feature_output_hook``) and the logits; the per-layer metrics
     compare each MLP output with the transcoder's reconstruction from the original inputs;
  2. replacement: every MLP output replaced at once by the reconstruction from the inputs of
     *this* pass (a CLT's features at layer l are decoded into layers l.. as the pass reaches
     them), no error terms;
  3. ablation: every MLP output zeroed.
Positions circuit-tracer zeroes features at (``model.zero_positions``: BOS) keep the original
MLP output in passes 2 and 3 and count in no metric; padding counts in none either.
Running sums (fp64; per-feature activity counts in int64) are all that survive a batch, so
memory is bounded by one batch. Definitions: ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch

from tracerflow.corpus import TokenBatch
from tracerflow.evaluation.codec import LayerCodec
from tracerflow.evaluation.results import (
    DENSITY_LOG10_BIN_WIDTH,
    DENSITY_LOG10_LOW,
    DENSITY_N_BINS,
    Evaluation,
    LayerMetrics,
    PerTokenValues,
    ReplacementFidelity,
    TranscoderMetrics,
)

Progress = Callable[[int, int | None], None]
"""``progress(tokens_done, tokens_total)``; the total is None when not known up front."""


def evaluate_transcoder(
    model: Any,
    batches: Iterable[TokenBatch],
    *,
    total_tokens: int | None = None,
    progress: Progress | None = None,
    keep_per_token: bool = False,
) -> Evaluation:
    """Evaluate the transcoders installed in ``model`` (a circuit-tracer ``ReplacementModel``)
    on ``batches`` (e.g. ``TokenCorpus.batches()``).

    Runs on the model's device in its dtype; every metric is reduced in fp32 and accumulated in
    fp64. ``keep_per_token`` also returns per-token values (``PerTokenValues``) for paired
    comparisons. Raises ``ValueError`` when the batches hold no evaluable token.
    """
    codec = LayerCodec(model.transcoders)
    sums = _RunningSums.zeros(codec, torch.device(model.cfg.device))
    kept: list[PerTokenValues] | None = [] if keep_per_token else None
    n_windows = 0
    for batch in batches:
        per_token = _evaluate_batch(model, codec, batch, sums)
        if kept is not None:
            kept.append(per_token)
        n_windows += batch.tokens.shape[0]
        if progress is not None:
            progress(sums.n_tokens, total_tokens)
    if sums.n_tokens == 0:
        raise ValueError("no evaluation tokens: every window is empty after its BOS")
    metrics = sums.metrics(codec, n_windows)
    return Evaluation(metrics=metrics, per_token=_concatenate(kept) if kept is not None else None)


@dataclass
class _RunningSums:
    """Everything a batch adds to; fp64 sums and int64 counts on the model's device."""

    n_tokens: int
    n_predictions: int
    squared_error: torch.Tensor  # [n_layers]
    output_sum: torch.Tensor  # [n_layers, d_model]
    output_squared_norm: torch.Tensor  # [n_layers]
    active_counts: torch.Tensor  # [n_layers, d_features] int64
    kl: float = 0.0
    top1_agree: int = 0
    ce_original: float = 0.0
    ce_replacement: float = 0.0
    ce_ablated: float = 0.0

    @classmethod
    def zeros(cls, codec: LayerCodec, device: torch.device) -> _RunningSums:
        n_layers, d_model = codec.n_layers, codec.d_model
        f64 = {"dtype": torch.float64, "device": device}
        return cls(
            n_tokens=0,
            n_predictions=0,
            squared_error=torch.zeros(n_layers, **f64),
            output_sum=torch.zeros(n_layers, d_model, **f64),
            output_squared_norm=torch.zeros(n_layers, **f64),
            active_counts=torch.zeros(n_layers, codec.d_features, dtype=torch.int64, device=device),
        )

    def metrics(self, codec: LayerCodec, n_windows: int) -> TranscoderMetrics:
        n = self.n_tokens
        # Σ‖y−ȳ‖² = Σ‖y‖² − ‖Σy‖²/N, per layer (fp64: the cancellation stays far below 1e-9).
        total_variance = self.output_squared_norm - self.output_sum.pow(2).sum(-1) / n
        counts = self.active_counts.cpu()
        layers = [
            _layer_metrics(
                layer,
                counts[layer],
                float(self.squared_error[layer]),
                float(total_variance[layer]),
                n,
            )
            for layer in range(codec.n_layers)
        ]
        all_layers = _layer_metrics(
            None,
            counts.reshape(-1),
            float(self.squared_error.sum()),
            float(total_variance.sum()),
            n,
        )
        ce_gap = self.ce_ablated - self.ce_original
        fidelity = ReplacementFidelity(
            kl=self.kl / n,
            top1_agreement=self.top1_agree / n,
            ce_original=self.ce_original / self.n_predictions if self.n_predictions else math.nan,
            ce_replacement=(
                self.ce_replacement / self.n_predictions if self.n_predictions else math.nan
            ),
            ce_ablated=self.ce_ablated / self.n_predictions if self.n_predictions else math.nan,
            ce_loss_recovered=(
                (self.ce_ablated - self.ce_replacement) / ce_gap if ce_gap != 0 else None
            ),
            n_predictions=self.n_predictions,
        )
        return TranscoderMetrics(
            kind=codec.kind,  # type: ignore[arg-type]
            n_layers=codec.n_layers,
            d_features=codec.d_features,
            n_windows=n_windows,
            n_tokens=n,
            layers=layers,
            all_layers=all_layers,
            fidelity=fidelity,
        )


def _layer_metrics(
    layer: int | None,
    active_counts: torch.Tensor,
    squared_error: float,
    total_variance: float,
    n_tokens: int,
) -> LayerMetrics:
    """One row from a layer's (or every layer's, flattened) per-feature activity counts.
    With several layers' counts, L0 is their sum per token (a CLT's features of every layer)."""
    n_features = active_counts.numel()
    density = active_counts.double() / n_tokens
    live = density[density > 0]
    bins = ((live.log10() - DENSITY_LOG10_LOW) / DENSITY_LOG10_BIN_WIDTH).floor().long()
    histogram = torch.bincount(bins.clamp(0, DENSITY_N_BINS - 1), minlength=DENSITY_N_BINS)
    return LayerMetrics(
        layer=layer,
        n_features=n_features,
        fvu=squared_error / total_variance if total_variance > 0 else math.nan,
        mse=squared_error / n_tokens,
        l0=float(active_counts.sum()) / n_tokens,
        dead_share=float((density == 0).sum()) / n_features,
        dense_1pct_share=float((density > 0.01).sum()) / n_features,
        dense_10pct_share=float((density > 0.1).sum()) / n_features,
        density_histogram=[int(count) for count in histogram],
    )


def _positions(model: Any, batch: TokenBatch, device: torch.device) -> tuple[Any, Any, Any]:
    """Token ids on the device, the ``[batch, pos]`` mask of evaluated positions (real, not in
    ``zero_positions``) and the mask of those with a next real token."""
    tokens = batch.tokens.to(device)
    real = batch.real.to(device)
    evaluated = real.clone()
    evaluated[:, getattr(model, "zero_positions", slice(0, 1))] = False
    has_next = torch.zeros_like(real)
    has_next[:, :-1] = real[:, 1:]
    return tokens, evaluated, evaluated & has_next


@torch.inference_mode()
def _evaluate_batch(
    model: Any, codec: LayerCodec, batch: TokenBatch, sums: _RunningSums
) -> PerTokenValues:
    device = torch.device(model.cfg.device)
    tokens, evaluated, predicted = _positions(model, batch, device)
    log_p_original, squared_error, active = _original_pass(model, codec, tokens, evaluated, sums)
    log_p_replacement = _replacement_pass(model, codec, tokens, evaluated)
    kl = (log_p_original.exp() * (log_p_original - log_p_replacement)).sum(-1)
    top1_agree = log_p_original.argmax(-1) == log_p_replacement.argmax(-1)
    log_p_ablated = _ablation_pass(model, tokens, evaluated)

    next_tokens = torch.zeros_like(tokens)
    next_tokens[:, :-1] = tokens[:, 1:]
    targets = next_tokens[evaluated][:, None]
    has_next = predicted[evaluated]
    nan = torch.tensor(math.nan, device=device)

    def cross_entropy(log_p: torch.Tensor) -> torch.Tensor:
        return torch.where(has_next, -log_p.gather(-1, targets)[:, 0], nan)

    ce_original = cross_entropy(log_p_original)
    ce_replacement = cross_entropy(log_p_replacement)
    ce_ablated = cross_entropy(log_p_ablated)

    sums.n_tokens += int(kl.shape[0])
    sums.n_predictions += int(has_next.sum())
    sums.kl += float(kl.double().sum())
    sums.top1_agree += int(top1_agree.sum())
    sums.ce_original += float(ce_original[has_next].double().sum())
    sums.ce_replacement += float(ce_replacement[has_next].double().sum())
    sums.ce_ablated += float(ce_ablated[has_next].double().sum())
    return PerTokenValues(
        kl=kl.cpu(),
        top1_agree=top1_agree.cpu(),
        ce_original=ce_original.cpu(),
        ce_replacement=ce_replacement.cpu(),
        ce_ablated=ce_ablated.cpu(),
        squared_error=squared_error.float().cpu(),
        active=active.cpu(),
    )


def _hook_names(model: Any, layer: int) -> tuple[str, str]:
    """circuit-tracer's transcoder input and MLP output hook points of one block."""
    return (
        f"blocks.{layer}.{model.feature_input_hook}",
        f"blocks.{layer}.{model.original_feature_output_hook}",
    )


def _original_pass(
    model: Any,
    codec: LayerCodec,
    tokens: torch.Tensor,
    evaluated: torch.Tensor,
    sums: _RunningSums,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The unmodified model: adds the per-layer sums; returns the log-probabilities
    ``[n_tokens, d_vocab]``, squared errors ``[n_layers, n_tokens]`` (fp64) and active feature
    counts ``[n_layers, n_tokens]`` of the evaluated positions."""
    inputs: dict[int, torch.Tensor] = {}
    outputs: dict[int, torch.Tensor] = {}

    def keep(acts: torch.Tensor, hook: Any, store: dict[int, torch.Tensor], layer: int) -> None:
        store[layer] = acts[evaluated]

    hooks = []
    for layer in range(codec.n_layers):
        input_name, output_name = _hook_names(model, layer)
        hooks.append((input_name, partial(keep, store=inputs, layer=layer)))
        hooks.append((output_name, partial(keep, store=outputs, layer=layer)))
    log_p = model.run_with_hooks(tokens, fwd_hooks=hooks)[evaluated].float().log_softmax(-1)

    n_layers, n_tokens = codec.n_layers, log_p.shape[0]
    decoded = torch.zeros(n_layers, n_tokens, codec.d_model, device=log_p.device)
    active = torch.zeros(n_layers, n_tokens, dtype=torch.int64, device=log_p.device)
    for layer in range(n_layers):
        features = codec.encode(layer, inputs[layer])
        is_active = features > 0
        active[layer] = is_active.sum(-1)
        sums.active_counts[layer] += is_active.sum(0)
        codec.decode_into(layer, features, decoded)
    squared_error = torch.zeros(n_layers, n_tokens, dtype=torch.float64, device=log_p.device)
    for layer in range(n_layers):
        target = outputs[layer].float()
        reconstruction = codec.finish(layer, decoded[layer], inputs[layer])
        squared_error[layer] = (target - reconstruction).double().pow(2).sum(-1)
        sums.output_sum[layer] += target.double().sum(0)
        sums.output_squared_norm[layer] += target.double().pow(2).sum()
    sums.squared_error += squared_error.sum(-1)
    return log_p, squared_error, active


def _replacement_pass(
    model: Any, codec: LayerCodec, tokens: torch.Tensor, evaluated: torch.Tensor
) -> torch.Tensor:
    """Log-probabilities ``[n_tokens, d_vocab]`` with every MLP output replaced by its
    reconstruction, computed from this pass's own transcoder inputs as the pass reaches them."""
    n_tokens = int(evaluated.sum())
    pending = torch.zeros(codec.n_layers, n_tokens, codec.d_model, device=tokens.device)
    layer_inputs: dict[int, torch.Tensor] = {}

    def encode_here(acts: torch.Tensor, hook: Any, layer: int) -> None:
        layer_inputs[layer] = acts[evaluated]
        codec.decode_into(layer, codec.encode(layer, layer_inputs[layer]), pending)

    def replace_here(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        reconstruction = codec.finish(layer, pending[layer], layer_inputs.pop(layer))
        replaced = acts.clone()
        replaced[evaluated] = reconstruction.to(acts.dtype)
        return replaced

    hooks = []
    for layer in range(codec.n_layers):
        input_name, output_name = _hook_names(model, layer)
        hooks.append((input_name, partial(encode_here, layer=layer)))
        hooks.append((output_name, partial(replace_here, layer=layer)))
    return model.run_with_hooks(tokens, fwd_hooks=hooks)[evaluated].float().log_softmax(-1)


def _ablation_pass(model: Any, tokens: torch.Tensor, evaluated: torch.Tensor) -> torch.Tensor:
    """Log-probabilities ``[n_tokens, d_vocab]`` with every MLP output zeroed."""

    def ablate_here(acts: torch.Tensor, hook: Any) -> torch.Tensor:
        ablated = acts.clone()
        ablated[evaluated] = 0
        return ablated

    hooks = [(_hook_names(model, layer)[1], ablate_here) for layer in range(model.cfg.n_layers)]
    return model.run_with_hooks(tokens, fwd_hooks=hooks)[evaluated].float().log_softmax(-1)


def _concatenate(parts: list[PerTokenValues]) -> PerTokenValues:
    def cat(name: str, dim: int = 0) -> torch.Tensor:
        return torch.cat([getattr(part, name) for part in parts], dim=dim)

    return PerTokenValues(
        kl=cat("kl"),
        top1_agree=cat("top1_agree"),
        ce_original=cat("ce_original"),
        ce_replacement=cat("ce_replacement"),
        ce_ablated=cat("ce_ablated"),
        squared_error=cat("squared_error", 1),
        active=cat("active", 1),
    )
