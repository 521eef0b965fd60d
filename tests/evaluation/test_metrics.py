"""The transcoder quality metrics: exact against an independent computation, the values training
recorded, sane orderings, hand-made cases with known answers, and independent of batching."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.evaluation.reference import ReferenceTranscoder, reference_metrics
from tracerflow import toy
from tracerflow.corpus import TokenCorpus
from tracerflow.evaluation import TranscoderMetrics, evaluate_transcoder
from tracerflow.models import load_replacement_model
from tracerflow.toy.grammar import sample_sentences
from tracerflow.toy.train import N_EVAL_SENTENCES, SEED
from tracerflow.transcoders import convert, load_converted
from tracerflow.transcoders.synthetic import checkpoint_config, random_checkpoint, write_checkpoint

# Tolerances against the float64 reference. The code under test runs the transcoders in fp32 and
# sums in fp64. Measured here (worst of the three toy transcoders): FVU 6.6e-9 relative, KL
# 2.5e-9, CE 1.2e-8 nats, CE recovered 2e-9; L0, shares and top-1 identical. The tolerances
# leave ~100x for other CPUs' rounding.
FVU_RTOL = 1e-6
KL_ATOL = 1e-7  # KL itself is 0.03-0.06 nats
CE_ATOL = 1e-6  # nats
# Counts are exact unless a TopK tie or a JumpReLU threshold flips between fp32 and fp64; a flip
# moves L0 by 1/n_tokens (2.4e-4), a share by 1/512 and top-1 by 1/n_tokens. None flipped here.
L0_ATOL = 1e-3


def evaluate(model: Any, corpus: TokenCorpus, batch_tokens: int = 1024) -> TranscoderMetrics:
    return evaluate_transcoder(model, corpus.batches(batch_tokens)).metrics


@pytest.mark.parametrize("name", toy.TRANSCODER_FOLDERS)
def test_every_metric_matches_an_independent_plain_torch_computation(
    name: str,
    toy_models: dict[str, Any],
    converted_dirs: dict[str, Path],
    reference_model: Any,
    eval_corpus: TokenCorpus,
) -> None:
    got = evaluate(toy_models[name], eval_corpus)
    want = reference_metrics(
        reference_model, ReferenceTranscoder(converted_dirs[name]), list(eval_corpus.windows())
    )
    assert got.n_tokens == want["n_tokens"] == eval_corpus.summary().n_text_tokens
    for row, ref in zip(got.layers, want["layers"], strict=True):
        assert row.fvu == pytest.approx(ref["squared_error"] / ref["total_variance"], rel=FVU_RTOL)
        assert row.mse == pytest.approx(ref["squared_error"] / want["n_tokens"], rel=FVU_RTOL)
        assert row.l0 == pytest.approx(ref["l0"], abs=L0_ATOL)
        for share in ("dead_share", "dense_1pct_share", "dense_10pct_share"):
            assert getattr(row, share) == pytest.approx(ref[share], abs=1.5 / 512), share
    assert got.all_layers.fvu == pytest.approx(want["fvu_pooled"], rel=FVU_RTOL)
    assert got.all_layers.l0 == pytest.approx(sum(r["l0"] for r in want["layers"]), abs=L0_ATOL)
    fidelity = got.fidelity
    assert fidelity.kl == pytest.approx(want["kl"], abs=KL_ATOL)
    assert fidelity.top1_agreement == pytest.approx(want["top1_agreement"], abs=2 / got.n_tokens)
    for ce in ("ce_original", "ce_replacement", "ce_ablated"):
        assert getattr(fidelity, ce) == pytest.approx(want[ce], abs=CE_ATOL), ce
    assert fidelity.ce_loss_recovered == pytest.approx(want["ce_loss_recovered"], abs=CE_ATOL)


def test_the_fvu_and_l0_training_recorded_are_reproduced_on_the_same_tokens(
    toy_models: dict[str, Any],
) -> None:
    """train.py evaluated each transcoder on these held-out sentences, one per window, every
    real non-BOS position. The shipped weights are the same bits on every machine, so only the
    forward pass's rounding differs (~1e-6): the tolerances are those of the recorded digits
    (FVU to 5 decimals, L0 to 3) plus rare JumpReLU threshold flips (1/8 158 of L0 each)."""
    sentences = sample_sentences(N_EVAL_SENTENCES, held_out=True, seed=SEED + 3)
    record = toy.training_record()["transcoders"]
    for name, model in toy_models.items():
        corpus = TokenCorpus.from_texts(
            [sentence.text for sentence in sentences], model.tokenizer, model.cfg.n_ctx
        )
        got = evaluate(model, corpus, batch_tokens=4096)
        assert [row.fvu for row in got.layers] == pytest.approx(
            record[name]["held_out_fvu_per_layer"], rel=1e-3, abs=1e-5
        ), name
        assert [row.l0 for row in got.layers] == pytest.approx(
            record[name]["held_out_l0_per_layer"], abs=2e-3
        ), name


def test_the_trained_clt_beats_a_random_clt_of_the_same_shape(
    toy_models: dict[str, Any], eval_corpus: TokenCorpus, tmp_path: Path
) -> None:
    """Every quality metric orders them. Density shares describe a transcoder rather than rank
    it, so they are not compared."""
    checkpoint = random_checkpoint(
        tmp_path / "random", kind="clt", n_layers=3, d_model=64, d_features=512, k=12
    )
    random_model = load_replacement_model(
        "toy-gpt2", load_converted(convert(checkpoint, tmp_path / "converted"), "cpu"), "cpu"
    )
    trained, random = evaluate(toy_models["clt"], eval_corpus), evaluate(random_model, eval_corpus)
    for trained_row, random_row in zip(trained.rows(), random.rows(), strict=True):
        assert trained_row.fvu < random_row.fvu
        assert trained_row.mse < random_row.mse
        # k=12 a layer at most (TopK keeps 12, ReLU may zero some): the trained CLT uses all k
        k_total = 12 * (1 if trained_row.layer is not None else 3)
        assert random_row.l0 <= trained_row.l0 == k_total
    assert trained.fidelity.kl < random.fidelity.kl
    assert trained.fidelity.top1_agreement > random.fidelity.top1_agreement
    assert trained.fidelity.ce_replacement < random.fidelity.ce_replacement
    assert trained.fidelity.ce_loss_recovered > random.fidelity.ce_loss_recovered  # type: ignore[operator]


def test_a_layer_with_exactly_three_features_that_never_fire_has_dead_share_three_over_f(
    eval_corpus: TokenCorpus, tmp_path: Path
) -> None:
    """A ReLU PLT whose biases make every feature fire on every token, except three features
    of layer 1 whose biases make them never fire."""
    n_layers, d_model, d_features = 3, 64, 32
    generator = torch.Generator().manual_seed(0)
    encoder_b = torch.full((n_layers, d_features), 1e4)
    encoder_b[1, [3, 17, 30]] = -1e4
    tensors = {
        "encoder.W": torch.randn(n_layers, d_model, d_features, generator=generator) * 0.01,
        "encoder.b": encoder_b,
        "decoder.W": torch.zeros(n_layers, d_features, d_model),
        "decoder.b": torch.zeros(n_layers, d_model),
    }
    config = checkpoint_config(
        kind="plt", n_layers=n_layers, d_model=d_model, d_features=d_features, nonlinearity="ReLU"
    )
    converted = convert(write_checkpoint(tmp_path / "ckpt", config, tensors), tmp_path / "conv")
    model = load_replacement_model("toy-gpt2", load_converted(converted, "cpu"), "cpu")
    got = evaluate(model, eval_corpus)
    assert [row.dead_share for row in got.layers] == [0.0, 3 / d_features, 0.0]
    assert got.all_layers.dead_share == 3 / (n_layers * d_features)
    assert [row.dense_10pct_share for row in got.layers] == [1.0, 29 / 32, 1.0]
    assert [row.l0 for row in got.layers] == [32.0, 29.0, 32.0]
    assert got.all_layers.l0 == 93.0
    # every live feature fires on every token: density 1, the histogram's last bin
    assert got.layers[1].density_histogram == [0] * 27 + [29]


def test_an_exact_reconstruction_gives_kl_0_top1_1_and_ce_recovered_1(
    converted_dirs: dict[str, Path], eval_corpus: TokenCorpus
) -> None:
    """The model's MLPs are made to *be* the transcoder: a permanent hook on each MLP output
    writes the independent reference reconstruction (from that pass's own inputs) there."""
    model = load_replacement_model("toy-gpt2", load_converted(converted_dirs["clt"], "cpu"), "cpu")
    reference = ReferenceTranscoder(converted_dirs["clt"])
    written: dict[int, torch.Tensor] = {}

    def read(acts: torch.Tensor, hook: Any, layer: int) -> None:
        if layer == 0:
            written.clear()
        features = reference.encode(layer, acts)
        for offset, write in enumerate(reference.contributions(layer, features)):
            written[layer + offset] = written.get(layer + offset, 0) + write

    def write(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
        return (written[layer] + reference.b_dec[layer]).to(acts.dtype)

    for layer in range(3):
        model.add_hook(
            f"blocks.{layer}.hook_resid_mid",
            partial(read, layer=layer),
            is_permanent=True,
        )
        model.add_hook(
            f"blocks.{layer}.hook_mlp_out",
            partial(write, layer=layer),
            is_permanent=True,
        )
    got = evaluate(model, eval_corpus)
    # The fp32 transcoder against the fp64 reconstruction rounded to fp32: a relative error of a
    # few 1e-7 per element, so FVU (a squared relative error) ~1e-14 [measured 8.9e-15].
    assert all(row.fvu < 1e-9 for row in got.rows())
    # KL is 0 only up to the rounding of two fp32 log-softmaxes: each token's KL is noise of
    # ~eps32 (1.2e-7) times log-probabilities of order 1 [per token +-3.3e-7 here; the mean
    # 2.2e-9 here, 2.5e-9 on another CPU], so KL_ATOL, as against the fp64 reference above.
    assert abs(got.fidelity.kl) < KL_ATOL
    assert got.fidelity.top1_agreement == 1.0
    assert got.fidelity.ce_ablated > got.fidelity.ce_original + 1  # ablation matters here
    assert got.fidelity.ce_loss_recovered == pytest.approx(1.0, abs=1e-6)


def test_the_batch_size_changes_no_metric(
    toy_models: dict[str, Any], eval_corpus: TokenCorpus
) -> None:
    """Streaming keeps running sums: one window a batch and the whole corpus in a handful give
    the same metrics (fp32 forward passes of other shapes round differently: ~1e-7) and the
    same per-token values in the same order."""
    model = toy_models["jumprelu-clt"]
    small = evaluate_transcoder(model, eval_corpus.batches(16), keep_per_token=True)
    large = evaluate_transcoder(model, eval_corpus.batches(8192), keep_per_token=True)
    assert small.metrics.n_windows == large.metrics.n_windows == 250
    for small_row, large_row in zip(small.metrics.rows(), large.metrics.rows(), strict=True):
        assert small_row.fvu == pytest.approx(large_row.fvu, rel=1e-5)
        assert small_row.l0 == pytest.approx(large_row.l0, abs=L0_ATOL)
        assert small_row.density_histogram == large_row.density_histogram
    for field in ("kl", "top1_agreement", "ce_replacement", "ce_loss_recovered"):
        assert getattr(small.metrics.fidelity, field) == pytest.approx(
            getattr(large.metrics.fidelity, field), rel=1e-5
        ), field
    assert small.per_token is not None and large.per_token is not None
    torch.testing.assert_close(small.per_token.kl, large.per_token.kl, atol=1e-6, rtol=1e-4)
    assert small.per_token.kl.mean().item() == pytest.approx(small.metrics.fidelity.kl, rel=1e-5)


def test_progress_reports_tokens_done_and_the_total(
    toy_models: dict[str, Any], eval_corpus: TokenCorpus
) -> None:
    calls: list[tuple[int, int | None]] = []
    total = eval_corpus.summary().n_text_tokens
    evaluate_transcoder(
        toy_models["plt"],
        eval_corpus.batches(2048),
        total_tokens=total,
        progress=lambda done, of: calls.append((done, of)),
    )
    assert len(calls) > 1
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[-1] == (total, total)


def test_metrics_are_bit_for_bit_reproducible_on_cpu(
    toy_models: dict[str, Any], eval_corpus: TokenCorpus
) -> None:
    assert evaluate(toy_models["plt"], eval_corpus) == evaluate(toy_models["plt"], eval_corpus)


def test_no_evaluation_tokens_is_one_clear_error(toy_models: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="no evaluation tokens"):
        evaluate_transcoder(toy_models["plt"], [])


def test_per_token_values_add_up_to_the_metrics(
    toy_models: dict[str, Any], eval_corpus: TokenCorpus
) -> None:
    evaluation = evaluate_transcoder(toy_models["clt"], eval_corpus.batches(), keep_per_token=True)
    metrics, per_token = evaluation.metrics, evaluation.per_token
    assert per_token is not None
    assert per_token.kl.shape == (metrics.n_tokens,)
    assert per_token.squared_error.shape == (3, metrics.n_tokens)
    has_next = ~per_token.ce_original.isnan()
    assert int(has_next.sum()) == metrics.fidelity.n_predictions == metrics.n_tokens - 250
    assert per_token.top1_agree.double().mean().item() == pytest.approx(
        metrics.fidelity.top1_agreement
    )
    assert per_token.ce_replacement[has_next].double().mean().item() == pytest.approx(
        metrics.fidelity.ce_replacement, rel=1e-6
    )
    assert per_token.active.double().mean(1).tolist() == pytest.approx(
        [row.l0 for row in metrics.layers]
    )
    assert per_token.squared_error.double().mean(1).tolist() == pytest.approx(
        [row.mse for row in metrics.layers], rel=1e-6
    )
