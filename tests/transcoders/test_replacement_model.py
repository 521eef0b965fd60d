"""Converted transcoders plug into circuit-tracer's ReplacementModel and attribution runs."""

from __future__ import annotations

import pytest
import torch
from circuit_tracer import ReplacementModel, attribute
from transformer_lens import HookedTransformerConfig

from tracerflow.transcoders import convert, load_converted
from tracerflow.transcoders.synthetic import random_checkpoint

K = 6


def tiny_config(tokenizer_dir) -> HookedTransformerConfig:
    from transformers import AutoTokenizer

    d_vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    return HookedTransformerConfig(
        n_layers=2,
        d_model=32,
        d_head=8,
        n_heads=4,
        d_mlp=64,
        n_ctx=64,
        d_vocab=d_vocab,
        act_fn="gelu_new",
        normalization_type="LN",
        tokenizer_name=str(tokenizer_dir),
        original_architecture="GPT2LMHeadModel",
        seed=0,
        device="cpu",
    )


@pytest.mark.parametrize("kind", ["clt", "plt"])
def test_attribution_runs_with_exact_topk_transcoders(tmp_path, tiny_tokenizer_dir, kind):
    checkpoint = random_checkpoint(
        tmp_path / "ckpt",
        kind=kind,
        n_layers=2,
        d_model=32,
        d_features=48,
        nonlinearity="PerLayerTopK",
        k=K,
        standardizer="dimensionwise",
    )
    transcoders = load_converted(convert(checkpoint, tmp_path / "converted"), device="cpu")
    model = ReplacementModel.from_config(tiny_config(tiny_tokenizer_dir), transcoders)

    graph = attribute(
        "Mary and John went to the store, John gave a drink to",
        model,
        max_n_logits=5,
        desired_logit_prob=0.9,
        batch_size=16,
    )

    active = graph.active_features  # [n_active, 3]: (layer, pos, feature)
    assert len(active) > 0
    per_layer_and_position = torch.unique(active[:, :2], dim=0, return_counts=True)[1]
    assert per_layer_and_position.max() <= K
    assert graph.adjacency_matrix.isfinite().all()
