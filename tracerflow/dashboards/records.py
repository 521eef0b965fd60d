"""Feature records in circuit-tracer's frontend format, from a finished ``DashboardState``.

One record per feature, with the field names of ``circuit_tracer/frontend/feature_models.py``
(``transcoder_id``, ``index``, ``examples_quantiles``, ``top_logits``, ``bottom_logits``,
``act_min``, ``act_max``, ``quantile_values``, ``histogram``, ``activation_frequency``) plus
``layer`` and ``n_active`` (extra keys the frontend ignores). Examples hold token strings as the
graph files do (``tokenizer.decode`` of one id, newlines shown as ``⏎``); a byte-level token that
is only part of a UTF-8 character is written as ``\\xNN`` escapes, which the frontend merges with
its neighbours (``mergeHexEscapedMax`` in ``init-feature-examples-list.js``).
"""

from __future__ import annotations

from typing import Any

import torch

from tracerflow.dashboards.compute import (
    HISTOGRAM_BINS,
    DashboardState,
    ExampleSet,
    feature_logits,
)

OUTPUT_HISTOGRAM_BINS = 50
N_QUANTILE_GROUPS = 4
EXAMPLES_PER_QUANTILE = 4
N_RANDOM_EXAMPLES = 4
N_LOGITS = 10


class TokenStrings:
    """Display strings of token ids, cached: what the frontend shows for each token."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.cache: dict[int, str] = {}
        try:
            from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode

            self.byte_decoder = {char: byte for byte, char in bytes_to_unicode().items()}
        except ImportError:  # pragma: no cover - transformers always has it today
            self.byte_decoder = {}

    def __call__(self, token_id: int) -> str:
        if token_id not in self.cache:
            self.cache[token_id] = self._display(token_id)
        return self.cache[token_id]

    def _display(self, token_id: int) -> str:
        text = self.tokenizer.decode([token_id])
        if "\ufffd" in text:
            piece = self.tokenizer.convert_ids_to_tokens(token_id)
            if isinstance(piece, str) and piece and all(c in self.byte_decoder for c in piece):
                return "".join(f"\\x{self.byte_decoder[c]:02x}" for c in piece)
        return text.replace("\n", "⏎").replace("\t", "→").replace("\r", "↵")


def dashboard_records(
    state: DashboardState, model: Any, transcoder_id: str, *, n_logits: int = N_LOGITS
) -> dict[tuple[int, int], dict[str, Any]]:
    """``{(layer, index): record}`` for every feature of ``state`` (frontend field names)."""
    strings = TokenStrings(model.tokenizer)
    top_ids, bottom_ids = feature_logits(model, state.features, k=n_logits)
    histograms, quantiles = _histograms_and_quantiles(state)
    records = {}
    for row, (layer, index) in enumerate(state.features):
        active = int(state.n_active[row])
        act_max = float(state.act_max[row])
        act_min = float(state.act_min[row]) if active else 0.0
        records[(layer, index)] = {
            "transcoder_id": transcoder_id,
            "layer": layer,
            "index": index,
            "examples_quantiles": _example_groups(state, row, strings),
            "top_logits": [strings(int(t)) for t in top_ids[row]],
            "bottom_logits": [strings(int(t)) for t in bottom_ids[row]],
            "act_min": act_min,
            "act_max": act_max,
            "quantile_values": quantiles[row],
            "histogram": histograms[row],
            "activation_frequency": active / state.n_tokens if state.n_tokens else 0.0,
            "n_active": active,
        }
    return records


def _example_groups(state: DashboardState, row: int, strings: TokenStrings) -> list[dict[str, Any]]:
    """Top examples, then examples at activation quantiles, then random active examples."""
    config = state.config
    groups = [
        {
            "quantile_name": "Top activations",
            "examples": _examples(state.top, row, strings, config.window_before),
        }
    ]
    # The reservoir is a uniform sample of the active sequences: sorted by activation, its
    # ranks estimate the quantiles of the feature's per-sequence max activation.
    sample = state.reservoir
    filled = int((sample.sequence[row] >= 0).sum())
    by_value = torch.sort(sample.value[row, :filled], descending=True, stable=True).indices
    for group in range(N_QUANTILE_GROUPS):
        lo, hi = group * filled // N_QUANTILE_GROUPS, (group + 1) * filled // N_QUANTILE_GROUPS
        if hi <= lo:
            continue
        picks = by_value[lo:hi]
        step = max(1, len(picks) // EXAMPLES_PER_QUANTILE)
        chosen = picks[::step][:EXAMPLES_PER_QUANTILE].tolist()
        upper = 100 - 100 * group // N_QUANTILE_GROUPS
        lower = 100 - 100 * (group + 1) // N_QUANTILE_GROUPS
        groups.append(
            {
                "quantile_name": f"Quantile {lower}-{upper}%",
                "examples": _examples(sample, row, strings, config.window_before, chosen),
            }
        )
    # Reservoir slots are in order of a random key: the first ones are a random sample.
    by_key = torch.sort(sample.key[row, :], stable=True).indices[: min(filled, N_RANDOM_EXAMPLES)]
    if filled:
        groups.append(
            {
                "quantile_name": "Random active examples",
                "examples": _examples(sample, row, strings, config.window_before, by_key.tolist()),
            }
        )
    return groups


def _examples(
    examples: ExampleSet,
    row: int,
    strings: TokenStrings,
    window_before: int,
    slots: list[int] | None = None,
) -> list[dict[str, Any]]:
    """The filled ``slots`` of one feature's examples, cut to the sequence (max token marked)."""
    slots = slots if slots is not None else list(range(examples.value.shape[1]))
    out = []
    for slot in slots:
        if int(examples.sequence[row, slot]) < 0:
            continue
        token_ids = examples.tokens[row, slot].tolist()
        acts = examples.acts[row, slot].tolist()
        inside = [i for i, t in enumerate(token_ids) if t >= 0]
        first, last = inside[0], inside[-1]
        out.append(
            {
                "tokens": [strings(t) for t in token_ids[first : last + 1]],
                "tokens_acts_list": [float(a) for a in acts[first : last + 1]],
                "train_token_ind": window_before - first,
                "is_repeated_datapoint": False,
            }
        )
    return out


def _histograms_and_quantiles(state: DashboardState) -> tuple[list[list[float]], list[list[float]]]:
    """Per feature: counts on ``OUTPUT_HISTOGRAM_BINS`` bins over ``[act_min, act_max]`` and the
    1st..100th percentiles of the active tokens' activations, both read off the fine histogram
    (so within one fine bin, ``2^e / HISTOGRAM_BINS``, of exact)."""
    width = torch.exp2(state.hist_exponent.double()) / HISTOGRAM_BINS  # [n]
    centers = (torch.arange(HISTOGRAM_BINS).double() + 0.5) * width.unsqueeze(1)  # [n, bins]
    act_min = torch.where(state.n_active > 0, state.act_min.double(), 0.0).unsqueeze(1)
    span = (state.act_max.double().unsqueeze(1) - act_min).clamp(min=1e-12)
    out_bin = ((centers - act_min) / span * OUTPUT_HISTOGRAM_BINS).floor()
    out_bin = out_bin.clamp(0, OUTPUT_HISTOGRAM_BINS - 1).long()
    counts = state.histogram.double()
    histograms = torch.zeros((len(state.features), OUTPUT_HISTOGRAM_BINS), dtype=torch.float64)
    histograms.scatter_add_(1, out_bin, counts)

    cumulative = counts.cumsum(1)  # [n, bins]
    targets = torch.arange(1, 101).double() / 100 * state.n_active.double().unsqueeze(1)
    bin_of = torch.searchsorted(cumulative.contiguous(), targets.contiguous()).clamp(
        max=HISTOGRAM_BINS - 1
    )
    upper_edges = (bin_of + 1).double() * width.unsqueeze(1)
    quantiles = torch.minimum(
        torch.maximum(upper_edges, act_min), state.act_max.double().unsqueeze(1)
    )
    quantiles = torch.where(state.n_active.unsqueeze(1) > 0, quantiles, 0.0)
    return histograms.tolist(), quantiles.tolist()
