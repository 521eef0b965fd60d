"""Seeded random replacement models, offline: for the attribution tests and benchmark.

A GPT-2-format byte-level BPE tokenizer trained on a few sentences, a ``HookedTransformerConfig``
with random weights, and random TopK transcoders. Small shapes go through tracerflow's real
checkpoint -> convert -> load route; ``random_converted`` writes circuit-tracer files directly,
one layer at a time, so a GPT-2-sized CLT (4.4 GB in fp32) never sits in memory whole.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import save_file

import tracerflow
from tracerflow.fsutil import atomic_directory, is_complete
from tracerflow.transcoders import convert, load_converted
from tracerflow.transcoders.manifest import ActivationSpec, Manifest
from tracerflow.transcoders.synthetic import random_checkpoint

# The reference notebook's prompt.
NOTEBOOK_PROMPT = "Mary and John went to the store, Jon gave a drink to"
_CORPUS = [
    "Mary and John went to the store, John gave a drink to Mary.",
    "Alice and Bob went to the park, Bob gave a book to Alice.",
    "When Tom and Sue went to the office, Sue handed a letter to Tom.",
    "The cat sat on the mat and the dog sat on the log.",
] * 20


def build_tokenizer(folder: str | Path, vocab_size: int = 300) -> Path:
    """A GPT-2-style byte-level BPE tokenizer folder (``<|endoftext|>`` last), built offline."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    folder = Path(folder)
    if (folder / "tokenizer_config.json").is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_CORPUS, vocab_size=vocab_size, min_frequency=1, special_tokens=[])
    bpe.add_special_tokens(["<|endoftext|>"])  # last id, non-zero: circuit-tracer drops id 0
    bpe.save_model(str(folder))
    GPT2TokenizerFast(
        vocab_file=str(folder / "vocab.json"),
        merges_file=str(folder / "merges.txt"),
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    ).save_pretrained(str(folder))
    return folder


def model_config(
    tokenizer_dir: str | Path,
    *,
    n_layers: int,
    d_model: int,
    n_heads: int,
    d_vocab: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    **overrides: Any,
) -> Any:
    """A GPT-2-shaped ``HookedTransformerConfig`` (d_mlp = 4 d_model) with seeded init."""
    from transformer_lens import HookedTransformerConfig
    from transformers import AutoTokenizer

    if d_vocab is None:
        d_vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    settings: dict[str, Any] = {
        "n_layers": n_layers,
        "d_model": d_model,
        "d_head": d_model // n_heads,
        "n_heads": n_heads,
        "d_mlp": 4 * d_model,
        "n_ctx": 1024,
        "d_vocab": d_vocab,
        "act_fn": "gelu_new",
        "normalization_type": "LN",
        "tokenizer_name": str(tokenizer_dir),
        "original_architecture": "GPT2LMHeadModel",
        "init_weights": True,
        "seed": seed,
        "device": device,
    }
    settings.update(overrides)
    return HookedTransformerConfig(**settings)


def random_converted(
    folder: str | Path,
    *,
    kind: Literal["clt", "plt"],
    n_layers: int,
    d_model: int,
    d_features: int,
    k: int,
    seed: int = 0,
) -> Path:
    """A converted PerLayerTopK transcoder folder with seeded random weights, written per layer.

    Same distributions as ``tracerflow.transcoders.synthetic.random_tensors``. Reused when a
    finished folder with these parameters exists.
    """
    folder = Path(folder)
    if is_complete(folder):
        return folder
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    params = f"{kind}-{n_layers}-{d_model}-{d_features}-{k}-{seed}"
    with atomic_directory(folder, overwrite=True) as tmp_dir:
        for layer in range(n_layers):
            n_targets = n_layers - layer if kind == "clt" else 1
            _save_layer(
                tmp_dir,
                kind,
                layer,
                w_enc=randn(d_features, d_model, scale=d_model**-0.5),
                b_enc=randn(d_features, scale=0.1) - 0.5,
                b_dec=randn(d_model, scale=0.05),
                w_dec=randn(d_features, n_targets, d_model, scale=d_features**-0.5),
            )
        Manifest(
            tracerflow_version=tracerflow.__version__,
            kind=kind,
            n_layers=n_layers,
            d_model=d_model,
            d_features=d_features,
            activation=ActivationSpec(source="PerLayerTopK", name="topk", k=k),
            dtype="float32",
            source_was_folded=True,
            source_files_sha256={"random": hashlib.sha256(params.encode()).hexdigest()},
            content_hash=hashlib.sha256(params.encode()).hexdigest(),
        ).write(tmp_dir)
    return folder


def _save_layer(
    folder: Path,
    kind: Literal["clt", "plt"],
    layer: int,
    *,
    w_enc: torch.Tensor,
    b_enc: torch.Tensor,
    b_dec: torch.Tensor,
    w_dec: torch.Tensor,
) -> None:
    """One layer's tensors in circuit-tracer's file layout for ``kind``."""
    if kind == "clt":
        encoder = {f"W_enc_{layer}": w_enc, f"b_enc_{layer}": b_enc, f"b_dec_{layer}": b_dec}
        save_file(encoder, folder / f"W_enc_{layer}.safetensors")
        save_file({f"W_dec_{layer}": w_dec}, folder / f"W_dec_{layer}.safetensors")
    else:
        tensors = {"W_enc": w_enc, "W_dec": w_dec[:, 0].contiguous(), "b_enc": b_enc}
        save_file({**tensors, "b_dec": b_dec}, folder / f"layer_{layer}.safetensors")


def random_replacement_model(
    workdir: str | Path,
    *,
    kind: Literal["clt", "plt"],
    n_layers: int,
    d_model: int,
    n_heads: int,
    d_features: int,
    k: int,
    d_vocab: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    through_checkpoint: bool | None = None,
    **config_overrides: Any,
) -> Any:
    """A ``ReplacementModel`` with random weights and random PerLayerTopK transcoders.

    ``through_checkpoint`` (default: for small shapes) writes a crosslayer-transcoder checkpoint
    and converts it, as a downloaded transcoder would be; otherwise ``random_converted``.
    """
    from circuit_tracer import ReplacementModel

    workdir = Path(workdir)
    tokenizer_dir = build_tokenizer(workdir / "tokenizer")
    if through_checkpoint is None:
        through_checkpoint = n_layers * d_model * d_features <= 4 * 64 * 512
    name = f"{kind}-L{n_layers}-d{d_model}-F{d_features}-k{k}-s{seed}"
    shape = {"kind": kind, "n_layers": n_layers, "d_model": d_model, "d_features": d_features}
    if through_checkpoint:
        converted = _converted_through_checkpoint(workdir, name, k=k, seed=seed, **shape)
    else:
        converted = random_converted(workdir / f"direct-{name}", k=k, seed=seed, **shape)
    transcoders = load_converted(converted, device=device, dtype=torch.float32)
    cfg = model_config(
        tokenizer_dir,
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        d_vocab=d_vocab,
        seed=seed,
        device=device,
        **config_overrides,
    )
    return ReplacementModel.from_config(cfg, transcoders)


def _converted_through_checkpoint(
    workdir: Path,
    name: str,
    *,
    kind: Literal["clt", "plt"],
    n_layers: int,
    d_model: int,
    d_features: int,
    k: int,
    seed: int,
) -> Path:
    """A random crosslayer-transcoder checkpoint, converted as a downloaded one would be."""
    converted = workdir / f"converted-{name}"
    if not is_complete(converted):
        checkpoint = random_checkpoint(
            workdir / f"checkpoint-{name}",
            kind=kind,
            n_layers=n_layers,
            d_model=d_model,
            d_features=d_features,
            nonlinearity="PerLayerTopK",
            k=k,
            seed=seed,
        )
        convert(checkpoint, converted, overwrite=True)
    return converted
