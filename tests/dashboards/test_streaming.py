"""The streaming state: independent of how the corpus is batched, bounded in size."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from tests.dashboards.conftest import corpus_sequences
from tracerflow.dashboards import DashboardConfig, collect_dashboards, dashboard_records
from tracerflow.dashboards.compute import DashboardState
from tracerflow.models import ReplacementModel

FEATURES = [(0, 3), (1, 5), (1, 311), (2, 7)]


def state_tensors(state: DashboardState) -> dict[str, torch.Tensor]:
    return {
        "top.value": state.top.value,
        "top.sequence": state.top.sequence,
        "top.tokens": state.top.tokens,
        "top.acts": state.top.acts,
        "reservoir.sequence": state.reservoir.sequence,
        "reservoir.acts": state.reservoir.acts,
        "histogram": state.histogram,
        "hist_exponent": state.hist_exponent,
        "n_active": state.n_active,
        "act_min": state.act_min,
        "act_max": state.act_max,
    }


def test_streamed_batches_give_the_state_of_one_batch(
    models: dict[str, ReplacementModel], corpus: torch.Tensor
) -> None:
    model = models["clt"]
    config = DashboardConfig(n_top=6, n_reservoir=5)
    one = collect_dashboards(model, [corpus], FEATURES, config=config)
    streamed = collect_dashboards(model, corpus.split(7), FEATURES, config=config)
    assert one.n_tokens == streamed.n_tokens
    # Activations of one token do not depend on the other rows of its batch on CPU fp32 here,
    # so the states are equal, not just close.
    for name, tensor in state_tensors(one).items():
        assert torch.equal(tensor, state_tensors(streamed)[name]), name
    assert dashboard_records(one, model, "toy") == dashboard_records(streamed, model, "toy")


def test_state_size_does_not_grow_with_the_corpus(models: dict[str, ReplacementModel]) -> None:
    model = models["plt"]
    small = corpus_sequences(model, 40, seed=1)
    large = corpus_sequences(model, 400, seed=1)
    assert large.shape[0] >= 9 * small.shape[0]
    config = DashboardConfig(n_top=4, n_reservoir=4)
    state_small = collect_dashboards(model, small.split(8), FEATURES, config=config)
    state_large = collect_dashboards(model, large.split(8), FEATURES, config=config)
    assert state_large.n_tokens > 9 * state_small.n_tokens
    assert state_small.nbytes() == state_large.nbytes()
    assert state_large.top.value.shape == (len(FEATURES), 4)


def test_reservoir_is_a_sample_of_active_sequences_and_the_top_is_sorted(
    models: dict[str, ReplacementModel], corpus: torch.Tensor
) -> None:
    state = collect_dashboards(
        models["clt"], corpus.split(16), FEATURES, config=DashboardConfig(n_reservoir=8)
    )
    for row in range(len(FEATURES)):
        values = state.top.value[row][state.top.sequence[row] >= 0]
        assert torch.equal(values, values.sort(descending=True).values)
        sampled = state.reservoir.sequence[row]
        sampled = sampled[sampled >= 0]
        assert len(set(sampled.tolist())) == len(sampled)  # without replacement
        assert bool((state.reservoir.value[row][: len(sampled)] > 0).all())


def test_no_wanted_features_reads_no_batch(models: dict[str, ReplacementModel]) -> None:
    def batches() -> Iterator[torch.Tensor]:
        raise AssertionError("the corpus was read")
        yield torch.zeros(1, 1)

    state = collect_dashboards(models["clt"], batches(), [])
    assert state.features == [] and state.n_tokens == 0


def test_a_feature_outside_the_transcoder_is_refused_by_name(
    models: dict[str, ReplacementModel],
) -> None:
    with pytest.raises(ValueError, match=r"feature \(3, 0\) is not in a transcoder of 3 layers"):
        collect_dashboards(models["clt"], [], [(3, 0)])
