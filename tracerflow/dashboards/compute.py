"""Feature dashboards, streamed: what each wanted feature fires on over a corpus, in bounded memory.

``collect_dashboards`` runs token batches through a circuit-tracer ``ReplacementModel``, reads
each layer's transcoder activations at the model's ``feature_input_hook`` with the transcoders'
own ``encode_layer`` (tracerflow's exact activation functions), and keeps, per wanted feature,
a fixed-size state (``DashboardState``):

- the top ``n_top`` examples: one per sequence, at the sequence's max-activating token, with a
  window of tokens and their activations; ties go to the earlier sequence;
- a uniform sample of ``n_reservoir`` active sequences (bottom-k of a hash of sequence and
  feature, so it does not depend on how the corpus is cut into batches), from which the
  quantile examples and the random examples are drawn;
- a histogram of the active tokens' activations on ``HISTOGRAM_BINS`` bins over ``[0, 2^e)``,
  ``e`` growing (adjacent bins merged) when a larger activation arrives; counts; min and max.

Every update is a few tensor operations over ``[batch, wanted features]``; nothing grows with
the corpus. Position 0 (BOS) and padding are not examples, as in attribution.
``feature_logits`` gives the direct effect of each feature on the logits (``docs/dashboards.md``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from functools import partial
from typing import Any

import torch

from tracerflow.dashboards.config import DashboardConfig

HISTOGRAM_BINS = 1024
_MASK32 = 0xFFFFFFFF


@dataclass
class ExampleSet:
    """``k`` examples per feature, as tensors ``[n_features, k, ...]``.

    ``value`` is the example's max activation (``-inf`` in an empty slot), ``sequence`` its index
    in the corpus (``-1`` when empty), ``tokens``/``acts`` the window ``[n_features, k, window]``
    (token ``-1`` outside the sequence), the max-activating token at ``window_before``.
    ``key`` orders the reservoir (smallest kept); unused for the top examples.
    """

    value: torch.Tensor
    sequence: torch.Tensor
    tokens: torch.Tensor
    acts: torch.Tensor
    key: torch.Tensor

    @classmethod
    def empty(cls, n_features: int, k: int, window: int) -> ExampleSet:
        return cls(
            value=torch.full((n_features, k), -torch.inf),
            sequence=torch.full((n_features, k), -1, dtype=torch.int64),
            tokens=torch.full((n_features, k, window), -1, dtype=torch.int32),
            acts=torch.zeros((n_features, k, window)),
            key=torch.full((n_features, k), torch.inf),
        )


@dataclass
class DashboardState:
    """The streaming state of ``n_features`` features ``features[i] = (layer, index)``."""

    features: list[tuple[int, int]]
    config: DashboardConfig
    top: ExampleSet
    reservoir: ExampleSet
    histogram: torch.Tensor  # [n_features, HISTOGRAM_BINS] counts of active tokens, int64
    hist_exponent: torch.Tensor  # [n_features] int64: the histogram spans [0, 2**e)
    n_active: torch.Tensor  # [n_features] int64: active tokens
    act_min: torch.Tensor  # [n_features]: smallest positive activation (inf if none)
    act_max: torch.Tensor  # [n_features]
    feature_layer: torch.Tensor  # [n_features] int64: features[i][0]
    feature_index: torch.Tensor  # [n_features] int64: features[i][1]
    n_tokens: int = 0  # tokens seen (BOS and padding excluded)
    n_sequences: int = 0

    @classmethod
    def empty(cls, features: Sequence[tuple[int, int]], config: DashboardConfig) -> DashboardState:
        n = len(features)
        pairs = [(int(layer), int(index)) for layer, index in features]
        return cls(
            features=pairs,
            feature_layer=torch.tensor([layer for layer, _ in pairs], dtype=torch.int64),
            feature_index=torch.tensor([index for _, index in pairs], dtype=torch.int64),
            config=config,
            top=ExampleSet.empty(n, config.n_top, config.window),
            reservoir=ExampleSet.empty(n, config.n_reservoir, config.window),
            histogram=torch.zeros((n, HISTOGRAM_BINS), dtype=torch.int64),
            hist_exponent=torch.full((n,), -64, dtype=torch.int64),
            n_active=torch.zeros(n, dtype=torch.int64),
            act_min=torch.full((n,), torch.inf),
            act_max=torch.zeros(n),
        )

    def nbytes(self) -> int:
        """Bytes held by the state's tensors (what must not grow with the corpus)."""
        total = 0
        for part in (self, self.top, self.reservoir):
            for f in fields(part):
                value = getattr(part, f.name)
                if isinstance(value, torch.Tensor):
                    total += value.numel() * value.element_size()
        return total


def wanted_features(
    n_layers: int, d_transcoder: int, features: Iterable[tuple[int, int]] | None
) -> list[tuple[int, int]]:
    """The sorted, de-duplicated ``(layer, index)`` pairs; every feature when ``None``.

    Raises ``ValueError`` naming the first pair outside the transcoder.
    """
    if features is None:
        return [(layer, index) for layer in range(n_layers) for index in range(d_transcoder)]
    chosen = sorted({(int(layer), int(index)) for layer, index in features})
    for layer, index in chosen:
        if not (0 <= layer < n_layers and 0 <= index < d_transcoder):
            raise ValueError(
                f"feature ({layer}, {index}) is not in a transcoder of {n_layers} layers x "
                f"{d_transcoder} features"
            )
    return chosen


def feature_activations(
    model: Any, tokens: torch.Tensor, feature_layer: torch.Tensor, feature_index: torch.Tensor
) -> torch.Tensor:
    """``[batch, seq, n_features]`` activations of features ``(feature_layer[i],
    feature_index[i])`` for ``tokens [batch, seq]``, float32 on the CPU.

    Hooks ``blocks.{l}.{model.feature_input_hook}`` and encodes there with
    ``model.transcoders.encode_layer`` (what circuit-tracer's ``get_activations`` does, batched
    and without zeroing position 0 of the batch). Each hook keeps only its layer's wanted
    columns, so one layer's full ``[batch, seq, d_transcoder]`` exists at a time; the forward
    stops after the last layer needed.
    """
    acts = torch.empty((*tokens.shape, len(feature_layer)))
    layers = sorted(set(feature_layer.tolist()))

    def keep_columns(resid: torch.Tensor, hook: Any, layer: int) -> None:
        columns = (feature_layer == layer).nonzero().squeeze(1)
        encoded = model.transcoders.encode_layer(resid, layer)
        acts[:, :, columns] = encoded[:, :, feature_index[columns].to(encoded.device)].float().cpu()

    hooks = [
        (f"blocks.{layer}.{model.feature_input_hook}", partial(keep_columns, layer=layer))
        for layer in layers
    ]
    with torch.inference_mode(), model.hooks(hooks):
        model(tokens.to(model.cfg.device), stop_at_layer=layers[-1] + 1)
    return acts


def update(
    state: DashboardState, model: Any, tokens: torch.Tensor, pad_token_id: int | None
) -> None:
    """Fold one batch ``tokens [batch, seq]`` into ``state`` (in place).

    A token counts when it is not at position 0 and not ``pad_token_id``.
    """
    tokens = tokens.to(torch.int64)
    acts = feature_activations(model, tokens, state.feature_layer, state.feature_index)
    valid = torch.ones_like(tokens, dtype=torch.bool)
    valid[:, 0] = False
    if pad_token_id is not None:
        valid &= tokens != pad_token_id
    acts *= valid.unsqueeze(-1)
    _update_statistics(state, acts)
    _update_examples(state, tokens, acts)
    state.n_tokens += int(valid.sum())
    state.n_sequences += tokens.shape[0]


def _update_statistics(state: DashboardState, acts: torch.Tensor) -> None:
    flat = acts.reshape(-1, acts.shape[-1])  # [tokens, n_features]
    active = flat > 0
    state.n_active += active.sum(0)
    state.act_max = torch.maximum(state.act_max, flat.max(0).values)
    positive = torch.where(active, flat, torch.inf)
    state.act_min = torch.minimum(state.act_min, positive.min(0).values)
    _grow_histogram(state, state.act_max)
    token, feature = active.nonzero(as_tuple=True)
    # Bin of each active token, floor(act / 2^e * BINS) in float64 (exact edges); only active
    # entries are touched, so the cost follows the activity, not features x bins.
    scale = torch.exp2(state.hist_exponent[feature].double())
    bins = (flat[token, feature].double() / scale * HISTOGRAM_BINS).floor().long()
    state.histogram.view(-1).index_put_(
        (feature * HISTOGRAM_BINS + bins.clamp(0, HISTOGRAM_BINS - 1),),
        torch.ones_like(feature),
        accumulate=True,
    )


def _grow_histogram(state: DashboardState, act_max: torch.Tensor) -> None:
    """Raise each feature's range ``2^e`` above its max, merging pairs of bins per doubling."""
    needed = torch.where(
        act_max > 0,
        torch.floor(torch.log2(act_max.double())).long() + 1,
        torch.full_like(state.hist_exponent, -64),
    )
    # A feature's first activity sets its exponent outright (its histogram is still empty).
    fresh = (state.hist_exponent == -64) & (needed > -64)
    state.hist_exponent[fresh] = needed[fresh]
    while True:
        grow = needed > state.hist_exponent
        if not grow.any():
            return
        merged = state.histogram[grow].view(-1, HISTOGRAM_BINS // 2, 2).sum(-1)
        state.histogram[grow] = torch.cat([merged, torch.zeros_like(merged)], dim=1)
        state.hist_exponent[grow] += 1


def _update_examples(state: DashboardState, tokens: torch.Tensor, acts: torch.Tensor) -> None:
    """Merge this batch's per-sequence maxima into the top examples and the reservoir."""
    batch, _, n_features = acts.shape
    seq_max, seq_argmax = acts.max(dim=1)  # [batch, n_features]
    sequence_ids = torch.arange(state.n_sequences, state.n_sequences + batch)
    # The feature's identity, not its column: its sample must not depend on the other features.
    feature_ids = state.feature_layer << 24 | state.feature_index
    value = seq_max.T.contiguous()  # [n_features, batch]
    position = seq_argmax.T.contiguous()
    sequence = sequence_ids.expand(n_features, batch)
    empty = value <= 0
    value = torch.where(empty, -torch.inf, value)

    config = state.config
    top_order = _merge_order(state.top.value, value, state.top.value.shape[1], descending=True)
    key = _hash_keys(sequence, feature_ids, config.seed)
    key = torch.where(empty, torch.inf, key)
    reservoir_order = _merge_order(state.reservoir.key, key, config.n_reservoir, descending=False)

    windows = _windows(tokens, acts, config)
    for examples, order in ((state.top, top_order), (state.reservoir, reservoir_order)):
        candidates = ExampleSet(
            value=value,
            sequence=torch.where(empty, -1, sequence),
            tokens=torch.empty(0),
            acts=torch.empty(0),
            key=key,
        )
        _take(examples, candidates, order, windows, position)


def _merge_order(old: torch.Tensor, new: torch.Tensor, k: int, *, descending: bool) -> torch.Tensor:
    """Indices into ``cat([old, new], 1)`` of the ``k`` best per row; ties keep the earlier."""
    merged = torch.cat([old, new], dim=1)
    return torch.sort(merged, dim=1, descending=descending, stable=True).indices[:, :k]


def _hash_keys(sequence: torch.Tensor, feature: torch.Tensor, seed: int) -> torch.Tensor:
    """A uniform key in [0, 1) per (sequence, feature), the same in any batching and whatever
    other features are collected alongside."""
    x = (sequence * 0x27D4EB2F + feature.unsqueeze(1) * 0x165667B1 + seed * 0x61C88647) & _MASK32
    for multiplier in (0x7FEB352D, 0x846CA68B & 0x7FFFFFFF):
        x = ((x ^ (x >> 16)) * multiplier) & _MASK32
    x = x ^ (x >> 15)
    return x.double() / 2.0**32


def _windows(tokens: torch.Tensor, acts: torch.Tensor, config: DashboardConfig) -> Any:
    """A function (sequence rows, positions, feature columns) -> (tokens, acts) windows."""
    offsets = torch.arange(-config.window_before, config.window_after + 1)
    seq_len = tokens.shape[1]

    def gather(rows: torch.Tensor, positions: torch.Tensor, columns: torch.Tensor) -> Any:
        where = positions.unsqueeze(-1) + offsets  # [m, window]
        inside = (where >= 0) & (where < seq_len)
        clamped = where.clamp(0, seq_len - 1)
        window_tokens = tokens[rows.unsqueeze(-1), clamped].to(torch.int32)
        window_acts = acts[rows.unsqueeze(-1), clamped, columns.unsqueeze(-1)]
        return torch.where(inside, window_tokens, -1), torch.where(inside, window_acts, 0.0)

    return gather


def _take(
    examples: ExampleSet,
    candidates: ExampleSet,
    order: torch.Tensor,
    windows: Any,
    position: torch.Tensor,
) -> None:
    """Replace ``examples`` by the ``order`` picks from ``cat([examples, candidates])``."""
    k = examples.value.shape[1]
    from_batch = order >= k
    batch_column = (order - k).clamp(min=0)
    old_column = order.clamp(max=k - 1)

    def pick(old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        return torch.where(from_batch, new.gather(1, batch_column), old.gather(1, old_column))

    new_value = pick(examples.value, candidates.value)
    new_sequence = pick(examples.sequence, candidates.sequence)
    new_key = pick(examples.key, candidates.key)
    idx = old_column.unsqueeze(-1).expand(-1, -1, examples.tokens.shape[2])
    new_tokens = examples.tokens.gather(1, idx)
    new_acts = examples.acts.gather(1, idx)
    feature, slot = from_batch.nonzero(as_tuple=True)
    if feature.numel():
        rows = batch_column[feature, slot]
        window_tokens, window_acts = windows(rows, position[feature, rows], feature)
        new_tokens[feature, slot] = window_tokens
        new_acts[feature, slot] = window_acts
    # Candidates that were empty (no activation) carry -1 sequences; clear their windows.
    unused = new_sequence < 0
    new_tokens[unused] = -1
    new_acts[unused] = 0.0
    examples.value, examples.sequence, examples.key = new_value, new_sequence, new_key
    examples.tokens, examples.acts = new_tokens, new_acts


def collect_dashboards(
    model: Any,
    batches: Iterable[torch.Tensor],
    features: Iterable[tuple[int, int]] | None = None,
    *,
    config: DashboardConfig | None = None,
    pad_token_id: int | None = None,
    progress: Any | None = None,
) -> DashboardState:
    """Stream ``batches`` (each ``[batch, seq]`` token ids, BOS first) through ``model``.

    Args:
        model: a circuit-tracer ``ReplacementModel`` (TransformerLens backend).
        batches: token batches; any iterable, read once.
        features: ``(layer, index)`` pairs to keep; ``None`` for every feature.
        config: sizes per feature (``DashboardConfig()`` by default).
        pad_token_id: a token id that marks padding (not counted, never an example).
        progress: called as ``progress(n_sequences, n_tokens)`` after each batch.

    Returns:
        The final ``DashboardState``; ``dashboard_records`` turns it into feature records.
    """
    config = config or DashboardConfig()
    transcoders = model.transcoders
    chosen = wanted_features(model.cfg.n_layers, int(transcoders.d_transcoder), features)
    state = DashboardState.empty(chosen, config)
    if not chosen:  # nothing to keep: do not run the model over the corpus
        return state
    for tokens in batches:
        if tokens.ndim != 2:
            raise ValueError(f"a token batch must be [batch, seq], got shape {tuple(tokens.shape)}")
        update(state, model, tokens, pad_token_id)
        if progress is not None:
            progress(state.n_sequences, state.n_tokens)
    return state


def feature_logits(
    model: Any, features: Sequence[tuple[int, int]], k: int = 10
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top and bottom ``k`` token ids of each feature's direct effect on the logits.

    The effect is ``d @ W_U`` with ``d`` the feature's decoder vector; for a CLT ``d`` is the
    sum of its decoder vectors into every target layer (each one adds to the residual stream
    that the unembedding reads). Returns ``(top, bottom)``, each ``[n_features, k]`` int64,
    top in decreasing and bottom in increasing order.
    """
    unembed = model.unembed.W_U.detach().float().cpu()  # [d_model, vocab]
    k = min(k, unembed.shape[1])
    top_ids, bottom_ids = [], []
    layers = sorted({layer for layer, _ in features})
    by_feature: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    for layer in layers:
        indices = torch.tensor([index for lyr, index in features if lyr == layer])
        directions = decoder_directions(model, layer, indices)
        effect = directions @ unembed  # [n, vocab]
        top = effect.topk(k, dim=1).indices
        bottom = (-effect).topk(k, dim=1).indices
        for row, index in enumerate(indices.tolist()):
            by_feature[(layer, index)] = (top[row], bottom[row])
    for feature in features:
        top, bottom = by_feature[feature]
        top_ids.append(top)
        bottom_ids.append(bottom)
    return torch.stack(top_ids), torch.stack(bottom_ids)


def decoder_directions(model: Any, layer: int, indices: torch.Tensor) -> torch.Tensor:
    """``[n, d_model]``: each feature's decoder vector, summed over target layers for a CLT."""
    vectors = model.transcoders._get_decoder_vectors(layer, indices).detach().float().cpu()
    return vectors.sum(dim=1) if vectors.ndim == 3 else vectors
