"""The shipped data: small, complete, trained, and exactly what the training script writes."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tracerflow import toy
from tracerflow.toy.train import TOPK_K
from tracerflow.transcoders import read_checkpoint

MAX_DATA_BYTES = 10 * 1024 * 1024
REPO_ROOT = Path(__file__).resolve().parents[2]


def _file_hashes(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


def test_shipped_data_is_at_most_10_mb() -> None:
    total = sum(path.stat().st_size for path in toy.data_dir().rglob("*") if path.is_file())
    assert total <= MAX_DATA_BYTES


def test_tokenizer_folder_has_the_gpt2_files() -> None:
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (toy.tokenizer_dir() / name).is_file(), name


@pytest.mark.parametrize(
    ("folder", "kind", "source", "folded"),
    [
        ("clt", "clt", "PerLayerTopK", False),
        ("plt", "plt", "PerLayerTopK", True),
        ("jumprelu-clt", "clt", "JumpReLU", True),
    ],
)
def test_each_checkpoint_is_a_crosslayer_transcoder_folder(
    folder: str, kind: str, source: str, folded: bool
) -> None:
    checkpoint = read_checkpoint(toy.transcoder_dir(folder))
    assert (checkpoint.kind, checkpoint.activation.source) == (kind, source)
    assert checkpoint.is_folded == folded
    assert checkpoint.needs_folding == (not folded)  # the CLT exercises the folding path
    if source == "PerLayerTopK":
        assert checkpoint.activation.k == TOPK_K
    assert checkpoint.n_layers == toy.training_record()["model"]["shape"]["n_layers"]


def test_training_record_has_steps_losses_accuracy_fvu_and_l0() -> None:
    record = toy.training_record()
    model = record["model"]
    assert model["steps"] > 0 and model["final_loss"] > 0
    assert model["held_out_io_accuracy"] >= 0.9
    n_layers = model["shape"]["n_layers"]
    for folder in toy.TRANSCODER_FOLDERS:
        stats = record["transcoders"][folder]
        assert stats["steps"] > 0 and stats["final_mse_standardized"] > 0
        assert len(stats["held_out_fvu_per_layer"]) == n_layers
        assert all(0 < fvu < 0.2 for fvu in stats["held_out_fvu_per_layer"]), folder
        assert all(1 <= l0 <= TOPK_K for l0 in stats["held_out_l0_per_layer"]), folder


@pytest.mark.slow
def test_the_training_script_reproduces_the_shipped_files_bit_for_bit(tmp_path: Path) -> None:
    """Runs the whole training (a few minutes on one core). Bit-for-bit holds on the CPU and torch
    build that wrote the data: every draw is seeded and the thread count pinned, but another
    CPU (other SIMD kernels) or torch version may round differently."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    subprocess.run(
        [sys.executable, "-m", "tracerflow.toy.train", "--out", str(tmp_path)],
        check=True,
        env=env,
        cwd=tmp_path,
        capture_output=True,
    )
    assert _file_hashes(tmp_path) == _file_hashes(toy.data_dir())
