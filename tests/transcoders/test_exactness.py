"""Converted transcoders compute exactly what the original checkpoint computes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch
from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder, load_clt

from tests.transcoders.reference import reference_forward
from tracerflow.transcoders import convert, load_converted, read_checkpoint
from tracerflow.transcoders.synthetic import random_checkpoint

NONLINEARITIES = ["PerLayerTopK", "BatchTopK", "PerLayerBatchTopK", "JumpReLU", "ReLU"]
STANDARDIZERS = [None, "dimensionwise", "layerwise"]  # None: a folded checkpoint
SHAPES = [(2, 16, 32), (3, 24, 40)]  # (n_layers, d_model, d_features)
TOLERANCE = 1e-5  # fp32 conversion against a float64 reference
# Active sets are compared exactly: no TopK choice, JumpReLU threshold or ReLU sign here sits
# within float32's reach of flipping [the reference's active sets stay the same under 1e-5
# relative noise on the inputs, 5 draws of every case], so they hold on every CPU.


def converted_and_reference(
    tmp_path: Path, kind: str, nonlinearity: str, standardizer: str | None, shape, seed: int = 0
):
    n_layers, d_model, d_features = shape
    checkpoint = random_checkpoint(
        tmp_path / "checkpoint",
        kind=kind,
        n_layers=n_layers,
        d_model=d_model,
        d_features=d_features,
        nonlinearity=nonlinearity,
        k=5,
        standardizer=standardizer,
        seed=seed,
    )
    transcoder = load_converted(convert(checkpoint, tmp_path / "converted"), device="cpu")
    resid_mid = torch.randn(n_layers, 7, d_model, generator=torch.Generator().manual_seed(seed))
    if standardizer is not None:  # inputs on the scale the standardizer expects
        resid_mid = resid_mid * 1.5 + 0.3
    return checkpoint, transcoder, resid_mid


def reconstruct(transcoder, resid_mid: torch.Tensor) -> torch.Tensor:
    if isinstance(transcoder, CrossLayerTranscoder):
        return transcoder(resid_mid)
    return torch.stack([tc(resid_mid[layer]) for layer, tc in enumerate(transcoder)])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("standardizer", STANDARDIZERS, ids=lambda s: s or "folded")
@pytest.mark.parametrize("nonlinearity", NONLINEARITIES)
@pytest.mark.parametrize("kind", ["clt", "plt"])
def test_features_and_reconstruction_match_the_reference(
    tmp_path, kind, nonlinearity, standardizer, shape
):
    checkpoint, transcoder, resid_mid = converted_and_reference(
        tmp_path, kind, nonlinearity, standardizer, shape
    )
    expected_features, expected_recon = reference_forward(checkpoint, resid_mid)

    with torch.no_grad():
        features = transcoder.encode(resid_mid)
        recon = reconstruct(transcoder, resid_mid)

    assert features.shape == expected_features.shape
    assert torch.equal(features != 0, expected_features != 0), "active sets differ"
    assert features.count_nonzero() > 0
    torch.testing.assert_close(features.double(), expected_features, atol=TOLERANCE, rtol=TOLERANCE)
    torch.testing.assert_close(recon.double(), expected_recon, atol=TOLERANCE, rtol=TOLERANCE)


@pytest.mark.parametrize("kind", ["clt", "plt"])
def test_every_attribution_code_path_applies_the_exact_topk(tmp_path, kind):
    checkpoint, transcoder, resid_mid = converted_and_reference(
        tmp_path, kind, "PerLayerTopK", "dimensionwise", (3, 16, 32)
    )
    expected, _ = reference_forward(checkpoint, resid_mid)
    expected = expected.float()
    with torch.no_grad():
        for layer in range(3):
            per_layer = transcoder.encode_layer(resid_mid[layer], layer)
            torch.testing.assert_close(per_layer, expected[layer], atol=TOLERANCE, rtol=0)
            pre = transcoder.encode_layer(resid_mid[layer], layer, apply_activation_function=False)
            applied = transcoder.apply_activation_function(layer, pre)
            torch.testing.assert_close(applied, expected[layer], atol=TOLERANCE, rtol=0)
        components = transcoder.compute_attribution_components(resid_mid)
    sparse = components["activation_matrix"].to_dense()
    expected[:, 0] = 0  # circuit-tracer zeroes the BOS position
    torch.testing.assert_close(sparse, expected, atol=TOLERANCE, rtol=0)
    assert (sparse != 0).sum(-1).max() <= 5


def test_stock_load_clt_runs_a_topk_clt_as_relu(tmp_path):
    """Why the exact path matters: circuit-tracer alone silently computes something else."""
    checkpoint, transcoder, resid_mid = converted_and_reference(
        tmp_path, "clt", "PerLayerTopK", None, (2, 16, 32)
    )
    stock = load_clt(str(tmp_path / "converted"), device=torch.device("cpu"), dtype=torch.float32)
    expected, _ = reference_forward(checkpoint, resid_mid)
    with torch.no_grad():
        stock_features = stock.encode(resid_mid)
        exact_features = transcoder.encode(resid_mid)
    assert (stock_features != 0).sum(-1).max() > 5, "stock ReLU keeps more than k features"
    assert not torch.equal(stock_features != 0, expected != 0)
    assert torch.equal(exact_features != 0, expected != 0)


def test_bfloat16_conversion_stays_close(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "ckpt", kind="clt", nonlinearity="ReLU")
    out = convert(checkpoint, tmp_path / "bf16", dtype=torch.bfloat16)
    transcoder = load_converted(out, device="cpu")
    assert transcoder.b_enc.dtype == torch.bfloat16
    assert read_checkpoint(checkpoint).kind == "clt"


@pytest.mark.parametrize("umask", [0o002, 0o077])
def test_converted_files_are_created_with_the_users_umask(tmp_path, umask):
    # safetensors writes 0600 whatever the umask: a team's shared artifact root was unreadable to
    # everyone but the writer. Every file of the folder gets what a plain open() would give.
    from tracerflow import toy

    previous = os.umask(umask)
    try:
        out = convert(toy.transcoder_dir("clt"), tmp_path / "converted")
    finally:
        os.umask(previous)
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in out.iterdir()}
    assert "W_enc_0.safetensors" in modes
    assert set(modes.values()) == {0o666 & ~umask}, modes
