"""Dashboards against a plain-torch reference on the toy preset.

The reference reads the residual stream with ``run_with_cache`` at ``blocks.l.hook_resid_mid``,
encodes with the converted safetensors in float64 (``W_enc``, ``b_enc``, PerLayerTopK k=12 written
out here: per token keep the 12 largest pre-activations, then ReLU), takes each sequence's max
over positions 1.. and sorts by (activation desc, sequence asc). Logits: the decoder rows from
the safetensors (summed over a CLT's target layers) times the toy model's ``W_U``.
Tolerance: activations within 1e-5 absolute (float32 against float64, values up to ~10).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.dashboards.conftest import SEQ_LEN
from tracerflow import toy
from tracerflow.dashboards import DashboardConfig, collect_dashboards, dashboard_records
from tracerflow.dashboards.compute import HISTOGRAM_BINS
from tracerflow.models import ReplacementModel

TOP_K = 12  # the toy transcoders' PerLayerTopK k (tracerflow.json of the converted folder)
ATOL = 1e-5
SAMPLE = [(0, 3), (0, 100), (1, 5), (1, 311), (2, 7), (2, 450)]


def reference_activations(
    model: ReplacementModel, converted: Path, kind: str, tokens: torch.Tensor
) -> torch.Tensor:
    """``[n_layers, batch, seq, F]`` float64, position 0 zeroed."""
    names = [f"blocks.{layer}.hook_resid_mid" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    layers = []
    for layer, name in enumerate(names):
        if kind == "clt":
            weights = load_file(str(converted / f"W_enc_{layer}.safetensors"))
            w_enc, b_enc = weights[f"W_enc_{layer}"], weights[f"b_enc_{layer}"]
        else:
            weights = load_file(str(converted / f"layer_{layer}.safetensors"))
            w_enc, b_enc = weights["W_enc"], weights["b_enc"]
        pre = cache[name].double() @ w_enc.double().T + b_enc.double()
        kept = torch.zeros_like(pre).scatter(-1, pre.topk(TOP_K, dim=-1).indices, 1.0)
        acts = torch.relu(pre) * kept
        acts[:, 0] = 0
        layers.append(acts)
    return torch.stack(layers)


def reference_top(acts: torch.Tensor, n_top: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sequence max, then the ``n_top`` best sequences: (values, sequence ids)."""
    seq_max = acts.max(dim=1).values  # [batch]
    order = sorted(range(len(seq_max)), key=lambda s: (-float(seq_max[s]), s))
    order = [s for s in order if seq_max[s] > 0][:n_top]
    return seq_max[order], torch.tensor(order)


def reference_logits(converted: Path, kind: str, layer: int, index: int, k: int) -> list[int]:
    if kind == "clt":
        w_dec = load_file(str(converted / f"W_dec_{layer}.safetensors"))[f"W_dec_{layer}"]
        direction = w_dec[index].double().sum(0)
    else:
        direction = load_file(str(converted / f"layer_{layer}.safetensors"))["W_dec"][index]
        direction = direction.double()
    w_u = load_file(str(toy.model_dir() / "model.safetensors"))["unembed.W_U"].double()
    return (direction @ w_u).topk(k).indices.tolist()


@pytest.mark.parametrize("kind", ["clt", "plt"])
def test_top_examples_values_and_logits_match_a_plain_torch_reference(
    kind: str,
    models: dict[str, ReplacementModel],
    converted: dict[str, Path],
    corpus: torch.Tensor,
) -> None:
    model = models[kind]
    config = DashboardConfig(n_top=8)
    state = collect_dashboards(model, corpus.split(16), SAMPLE, config=config)
    records = dashboard_records(state, model, "toy", n_logits=5)
    reference = reference_activations(model, converted[kind], kind, corpus)

    for row, (layer, index) in enumerate(state.features):
        acts = reference[layer, :, :, index]
        values, sequences = reference_top(acts, config.n_top)
        n = len(values)
        assert n > 0, f"feature {(layer, index)} never fires on the test corpus"
        torch.testing.assert_close(state.top.value[row, :n].double(), values, atol=ATOL, rtol=0)
        gaps = (values[:-1] - values[1:]).abs()
        if bool((gaps > ATOL).all()):  # no near-ties: the order is determined
            assert state.top.sequence[row, :n].tolist() == sequences.tolist()
        # Every stored window holds the reference's activations of its tokens.
        for slot in range(n):
            sequence = int(state.top.sequence[row, slot])
            position = int(acts[sequence].argmax())
            window = torch.arange(position - 12, position + 5)
            inside = (window >= 0) & (window < SEQ_LEN)
            expected = torch.where(inside, acts[sequence][window.clamp(0, SEQ_LEN - 1)], 0.0)
            torch.testing.assert_close(
                state.top.acts[row, slot].double(), expected, atol=ATOL, rtol=0
            )
            expected_tokens = torch.where(
                inside, corpus[sequence][window.clamp(0, SEQ_LEN - 1)], -1
            )
            assert state.top.tokens[row, slot].tolist() == expected_tokens.tolist()

        # Exact: float32 moves no decision here [TopK gaps at these features >= 4e-4, active
        # values >= 0.85, max/2^e in 0.50..0.98], far beyond its ~1e-6 of rounding.
        active = acts > 0
        assert int(state.n_active[row]) == int(active.sum())
        assert float(state.act_max[row]) == pytest.approx(float(acts.max()), abs=ATOL)
        assert float(state.act_min[row]) == pytest.approx(float(acts[active].min()), abs=ATOL)
        # The fine histogram: counts of floor(act / 2^e * bins) over [0, 2^e), e the smallest
        # exponent with 2^e above the max (bins on a power of two: merging pairs is exact).
        exponent = int(torch.floor(torch.log2(acts.max()))) + 1
        assert int(state.hist_exponent[row]) == exponent
        scaled = acts[active] / 2.0**exponent * HISTOGRAM_BINS
        expected_histogram = torch.bincount(scaled.floor().long(), minlength=HISTOGRAM_BINS)
        # An activation within ATOL of a bin edge may fall on either side in float32, which
        # rounds differently on other CPUs [nearest edges here: 1.3e-6]: each such one may move
        # one count to the neighbouring bin. Every other count is exact.
        edge_distance = torch.minimum(scaled - scaled.floor(), scaled.ceil() - scaled)
        n_on_an_edge = int((edge_distance * 2.0**exponent / HISTOGRAM_BINS < ATOL).sum())
        moved = (state.histogram[row] - expected_histogram).abs().sum()
        assert int(state.histogram[row].sum()) == int(active.sum())
        assert int(moved) <= 2 * n_on_an_edge
        record = records[(layer, index)]
        n_tokens = corpus.shape[0] * (SEQ_LEN - 1)
        assert record["activation_frequency"] == pytest.approx(int(active.sum()) / n_tokens)
        expected_logits = reference_logits(converted[kind], kind, layer, index, 5)
        strings = [model.tokenizer.decode([t]) for t in expected_logits]
        # A byte-level token that is part of a UTF-8 character is written as \\xNN escapes.
        assert len(record["top_logits"]) == len(strings)
        for shown, decoded in zip(record["top_logits"], strings, strict=True):
            assert shown == decoded or ("\ufffd" in decoded and shown.startswith("\\x"))
