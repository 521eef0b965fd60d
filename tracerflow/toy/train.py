"""Train the toy preset: tokenizer, model and three transcoders. Deterministic and seeded.

    python -m tracerflow.toy.train [--out DIR]
    python -m tracerflow.toy.train --checkpoints-at 30,150,600 --out DIR   (a training run's
        checkpoints of one toy PLT on the shipped model: DIR/step-000030, ...)

Writes into ``tracerflow/toy/data/`` by default (the committed package data), with
``training.json``'s figures and machine signature. The stages, and what reproduces byte for byte
where: docs/toy.md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tracerflow.toy import EVAL_CORPUS_FILE
from tracerflow.toy.grammar import NAMES, Sentence, eval_corpus_texts, sample_sentences
from tracerflow.transcoders.synthetic import checkpoint_config, write_checkpoint

TORCH_THREADS = 1  # faster than 2 for these tiny matrices on a shared machine
SEED = 0
DEFAULT_OUT = Path(__file__).parent / "data"
EOT = "<|endoftext|>"

# --- sizes and schedules --------------------------------------------------------------------
MODEL_SHAPE = {"n_layers": 3, "d_model": 64, "n_heads": 4, "d_head": 16, "d_mlp": 256, "n_ctx": 64}
MODEL_STEPS = 750
MODEL_BATCH = 64
MODEL_LR = 2e-3

N_ACTIVATION_SENTENCES = 3000  # ~60k token positions per layer
N_EVAL_SENTENCES = 500
D_FEATURES = 512
TOPK_K = 12
TRANSCODER_STEPS = 1500
TRANSCODER_BATCH = 512
TRANSCODER_LR = 2e-3
JUMPRELU_STEPS = 1000
JUMPRELU_TARGET_L0 = 12.0
JUMPRELU_BANDWIDTH = 0.05


# --- tokenizer ------------------------------------------------------------------------------


def corpus_texts(n: int = 4000) -> list[str]:
    """Training text for the tokenizer: sentences, and every name with and without a space."""
    texts = [s.text for s in sample_sentences(n, held_out=False, seed=SEED + 1)]
    texts += [*NAMES, *(f" {name}" for name in NAMES)]
    return texts


def build_tokenizer(tokenizer_dir: Path) -> Any:
    """Train a byte-level BPE on the corpus and save it as a GPT-2 tokenizer folder.

    Every word of the grammar becomes one token; ``<|endoftext|>`` is added last (a non-zero
    id, as in GPT-2) and serves as BOS, EOS and padding.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2TokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus_texts(), vocab_size=1024, min_frequency=1, show_progress=False)
    tokenizer_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as raw_dir:
        bpe.save_model(raw_dir)
        tokenizer = GPT2TokenizerFast(
            vocab_file=str(Path(raw_dir) / "vocab.json"),
            merges_file=str(Path(raw_dir) / "merges.txt"),
            bos_token=EOT,
            eos_token=EOT,
            unk_token=EOT,
            add_prefix_space=False,
        )
    tokenizer.add_special_tokens({"pad_token": EOT})
    tokenizer.save_pretrained(str(tokenizer_dir))
    return tokenizer


# --- model ----------------------------------------------------------------------------------


def model_config_fields(d_vocab: int) -> dict[str, Any]:
    """The ``HookedTransformerConfig`` fields of the toy model (``tokenizer_name`` set at load)."""
    return {
        **MODEL_SHAPE,
        "d_vocab": d_vocab,
        "act_fn": "gelu_new",
        "normalization_type": "LN",
        "positional_embedding_type": "standard",
        "original_architecture": "GPT2LMHeadModel",
        "model_name": "toy-gpt2",
        "default_prepend_bos": True,
    }


def encode_batch(tokenizer: Any, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """``[batch, pos]`` token ids with a leading BOS, right-padded, and the ``[batch, pos]`` mask
    of real tokens."""
    bos = tokenizer.bos_token_id
    rows = [[bos, *tokenizer(text, add_special_tokens=False).input_ids] for text in texts]
    width = max(len(row) for row in rows)
    tokens = torch.full((len(rows), width), bos, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = True
    return tokens, mask


def lr_at(step: int, total: int, peak: float, warmup: int = 100) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_model(tokenizer: Any, log: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(**model_config_fields(len(tokenizer)), device="cpu")
    torch.manual_seed(SEED)
    model = HookedTransformer(cfg)  # no tokenizer: we feed ids
    optimizer = torch.optim.AdamW(model.parameters(), lr=MODEL_LR, weight_decay=0.01)
    loss = torch.tensor(0.0)
    for step in range(MODEL_STEPS):
        sentences = sample_sentences(MODEL_BATCH, held_out=False, seed=10_000 + step)
        tokens, mask = encode_batch(tokenizer, [s.text for s in sentences])
        logits = model(tokens)
        targets_mask = mask[:, 1:]
        loss = nn.functional.cross_entropy(
            logits[:, :-1][targets_mask], tokens[:, 1:][targets_mask]
        )
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, MODEL_STEPS, MODEL_LR)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 250 == 0 or step == MODEL_STEPS - 1:
            accuracy = io_accuracy(model, tokenizer, sample_sentences(200, held_out=True, seed=7))
            log(f"model step {step}: loss {loss.item():.4f}, held-out IO accuracy {accuracy:.3f}")
    accuracy = io_accuracy(
        model, tokenizer, sample_sentences(N_EVAL_SENTENCES, held_out=True, seed=7)
    )
    log(f"model held-out IO accuracy {accuracy:.3f}")
    return model, {
        "steps": MODEL_STEPS,
        "final_loss": round(loss.item(), 6),
        "held_out_io_accuracy": accuracy,
    }


@torch.no_grad()
def io_accuracy(model: Any, tokenizer: Any, sentences: list[Sentence]) -> float:
    """Fraction of prompts whose top next-token prediction is the IO name."""
    correct = 0
    for start in range(0, len(sentences), 100):
        chunk = sentences[start : start + 100]
        tokens, mask = encode_batch(tokenizer, [s.prompt for s in chunk])
        logits = model(tokens)
        last = mask.sum(dim=1) - 1
        predicted = logits[torch.arange(len(chunk)), last].argmax(dim=-1)
        answers = torch.tensor([tokenizer(s.answer).input_ids[0] for s in chunk])
        correct += int((predicted == answers).sum())
    return round(correct / len(sentences), 4)


# --- activations ----------------------------------------------------------------------------


@torch.no_grad()
def collect_activations(
    model: Any, tokenizer: Any, sentences: list[Sentence]
) -> tuple[torch.Tensor, torch.Tensor]:
    """``hook_resid_mid`` and ``hook_mlp_out`` of every layer at every real, non-BOS position:
    two ``[n_positions, n_layers, d_model]`` tensors."""
    n_layers = model.cfg.n_layers
    names = [
        f"blocks.{layer}.hook_{kind}"
        for layer in range(n_layers)
        for kind in ("resid_mid", "mlp_out")
    ]
    inputs, outputs = [], []
    for start in range(0, len(sentences), 200):
        tokens, mask = encode_batch(tokenizer, [s.text for s in sentences[start : start + 200]])
        _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
        keep = mask.clone()
        keep[:, 0] = False  # BOS: circuit-tracer zeroes features at position 0
        inputs.append(
            torch.stack([cache[f"blocks.{i}.hook_resid_mid"][keep] for i in range(n_layers)], 1)
        )
        outputs.append(
            torch.stack([cache[f"blocks.{i}.hook_mlp_out"][keep] for i in range(n_layers)], 1)
        )
    return torch.cat(inputs), torch.cat(outputs)


# --- transcoders -----------------------------------------------------------------------------


class _JumpReLU(torch.autograd.Function):
    """``x * [x > θ]`` with the straight-through pseudo-derivative for θ (rectangle kernel)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(x, theta)
        ctx.bandwidth = bandwidth
        return x * (x > theta)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, theta = ctx.saved_tensors
        window = ((x - theta).abs() < ctx.bandwidth / 2).to(x.dtype)
        grad_theta = (grad * -(theta / ctx.bandwidth) * window).sum(dim=0)
        return grad * (x > theta), grad_theta, None


class _Step(torch.autograd.Function):
    """``[x > θ]`` (counts active features) with the straight-through pseudo-derivative for θ."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, theta: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(x, theta)
        ctx.bandwidth = bandwidth
        return (x > theta).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, None]:
        x, theta = ctx.saved_tensors
        window = ((x - theta).abs() < ctx.bandwidth / 2).to(x.dtype)
        return None, (grad * -(1.0 / ctx.bandwidth) * window).sum(dim=0), None


class ToyTranscoder(nn.Module):
    """A CLT or PLT in standardized coordinates, with the crosslayer-transcoder tensor layout.

    ``forward(x)`` takes standardized inputs ``[batch, n_layers, d_model]`` and returns the
    standardized reconstruction ``[batch, n_layers, d_model]`` and the features
    ``[batch, n_layers, d_features]``.
    """

    def __init__(self, kind: str, n_layers: int, d_model: int, d_features: int, k: int) -> None:
        super().__init__()
        self.kind, self.n_layers, self.k = kind, n_layers, k
        self.jumprelu = False
        w_enc = torch.randn(n_layers, d_model, d_features) * d_model**-0.5
        self.encoder_W = nn.Parameter(w_enc)
        self.encoder_b = nn.Parameter(torch.zeros(n_layers, d_features))
        if kind == "clt":
            self.decoder_W = nn.ParameterList(
                nn.Parameter(w_enc[: t + 1].transpose(1, 2).clone() * 0.1 / (t + 1))
                for t in range(n_layers)
            )
        else:
            self.decoder_W = nn.ParameterList([nn.Parameter(w_enc.transpose(1, 2).clone() * 0.1)])
        self.decoder_b = nn.Parameter(torch.zeros(n_layers, d_model))
        self.log_theta = nn.Parameter(torch.zeros(n_layers, d_features), requires_grad=False)

    def pre_activations(self, x: torch.Tensor) -> torch.Tensor:
        return torch.einsum("bld,ldf->blf", x, self.encoder_W) + self.encoder_b

    def activate(self, pre: torch.Tensor) -> torch.Tensor:
        if self.jumprelu:
            return _JumpReLU.apply(pre, self.log_theta.exp(), JUMPRELU_BANDWIDTH)
        values, indices = torch.topk(pre, self.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, indices, torch.relu(values))

    def decode(self, features: torch.Tensor) -> torch.Tensor:
        if self.kind == "plt":
            return torch.einsum("blf,lfd->bld", features, self.decoder_W[0]) + self.decoder_b
        outputs = [
            torch.einsum("blf,lfd->bd", features[:, : t + 1], self.decoder_W[t])
            for t in range(self.n_layers)
        ]
        return torch.stack(outputs, dim=1) + self.decoder_b

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.activate(self.pre_activations(x))
        return self.decode(features), features

    def l0(self, pre: torch.Tensor) -> torch.Tensor:
        """Differentiable (straight-through) count of active JumpReLU features, ``[]``."""
        return _Step.apply(pre, self.log_theta.exp(), JUMPRELU_BANDWIDTH).sum(-1).mean()


@dataclass(frozen=True)
class Standardizers:
    """Dimensionwise statistics ``[n_layers, d_model]`` of the transcoders' inputs and outputs."""

    in_mean: torch.Tensor
    in_std: torch.Tensor
    out_mean: torch.Tensor
    out_std: torch.Tensor

    @classmethod
    def fit(cls, inputs: torch.Tensor, outputs: torch.Tensor) -> Standardizers:
        return cls(inputs.mean(0), inputs.std(0), outputs.mean(0), outputs.std(0))


def fit_transcoder(
    transcoder: ToyTranscoder,
    x: torch.Tensor,
    y: torch.Tensor,
    steps: int,
    seed: int,
    log: Callable[[str], None],
    name: str,
    after_step: Callable[[int], None] | None = None,
    batch: int = TRANSCODER_BATCH,
) -> float:
    """Minimise the standardized reconstruction MSE (plus, for JumpReLU, an L0 penalty whose
    coefficient is steered towards ``JUMPRELU_TARGET_L0``). Returns the final MSE.
    ``after_step(n)`` is called once ``n`` optimizer steps are done (to save checkpoints)."""
    generator = torch.Generator().manual_seed(seed)
    params = [p for p in transcoder.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=TRANSCODER_LR)
    sparsity = 1e-3
    mse = torch.tensor(0.0)
    for step in range(steps):
        rows = torch.randint(0, x.shape[0], (batch,), generator=generator)
        pre = transcoder.pre_activations(x[rows])
        reconstruction = transcoder.decode(transcoder.activate(pre))
        mse = (reconstruction - y[rows]).pow(2).sum(-1).mean()
        loss = mse
        if transcoder.jumprelu:
            l0 = transcoder.l0(pre)
            loss = mse + sparsity * l0
            # A deterministic controller: raise the penalty while L0 is above its target.
            per_layer_l0 = l0.item() / transcoder.n_layers
            sparsity *= math.exp(0.02 * math.tanh(per_layer_l0 - JUMPRELU_TARGET_L0))
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, steps, TRANSCODER_LR)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 500 == 0 or step == steps - 1:
            log(f"{name} step {step}: mse {mse.item():.4f}")
        if after_step is not None:
            after_step(step + 1)
    return mse.item()


@torch.no_grad()
def evaluate_transcoder(
    transcoder: ToyTranscoder, stats: Standardizers, x: torch.Tensor, y: torch.Tensor
) -> dict[str, list[float]]:
    """Per-layer FVU (in the model's own coordinates) and mean L0 on held-out activations."""
    reconstruction, features = transcoder((x - stats.in_mean) / stats.in_std)
    reconstruction = reconstruction * stats.out_std + stats.out_mean
    residual = (y - reconstruction).pow(2).sum(dim=(0, 2))
    total = (y - y.mean(0)).pow(2).sum(dim=(0, 2))
    fvu = (residual / total).tolist()
    l0 = (features > 0).float().sum(-1).mean(0).tolist()
    return {"fvu": [round(v, 5) for v in fvu], "l0": [round(v, 3) for v in l0]}


def checkpoint_tensors(
    transcoder: ToyTranscoder, stats: Standardizers, *, fold: bool
) -> dict[str, torch.Tensor]:
    """The crosslayer-transcoder tensors; folded (standardizers multiplied in, in float64) or
    unfolded (standardizer statistics stored next to the standardized weights)."""
    f64 = {
        "in_mean": stats.in_mean.double(),
        "in_std": stats.in_std.double(),
        "out_mean": stats.out_mean.double(),
        "out_std": stats.out_std.double(),
    }
    w_enc = transcoder.encoder_W.detach().double()
    b_enc = transcoder.encoder_b.detach().double()
    b_dec = transcoder.decoder_b.detach().double()
    decoders = [w.detach().double() for w in transcoder.decoder_W]
    if fold:
        w_enc = w_enc / f64["in_std"].unsqueeze(-1)
        b_enc = b_enc - torch.einsum("ld,ldf->lf", f64["in_mean"], w_enc)
        if transcoder.kind == "clt":
            decoders = [w * f64["out_std"][t] for t, w in enumerate(decoders)]
        else:
            decoders = [decoders[0] * f64["out_std"].unsqueeze(1)]
        b_dec = b_dec * f64["out_std"] + f64["out_mean"]
    tensors = {"encoder.W": w_enc, "encoder.b": b_enc, "decoder.b": b_dec}
    if transcoder.kind == "clt":
        tensors.update({f"decoder.W_{t}": w for t, w in enumerate(decoders)})
    else:
        tensors["decoder.W"] = decoders[0]
    if transcoder.jumprelu:
        tensors["nonlinearity.theta"] = transcoder.log_theta.detach().double().exp().unsqueeze(0)
        tensors["nonlinearity.bandwidth"] = torch.tensor(JUMPRELU_BANDWIDTH, dtype=torch.float64)
    if not fold:
        tensors["input_standardizer.mean"] = f64["in_mean"]
        tensors["input_standardizer.std"] = f64["in_std"]
        tensors["output_standardizer.mean"] = f64["out_mean"]
        tensors["output_standardizer.std"] = f64["out_std"]
    return {name: tensor.float().contiguous() for name, tensor in tensors.items()}


TRANSCODER_SPECS = {
    # folder: (kind, nonlinearity, folded)
    "clt": ("clt", "PerLayerTopK", False),
    "plt": ("plt", "PerLayerTopK", True),
    "jumprelu-clt": ("clt", "JumpReLU", True),
}


def train_transcoders(
    model: Any, tokenizer: Any, out: Path, log: Callable[[str], None]
) -> dict[str, Any]:
    """Train and write the three transcoders; returns their statistics for ``training.json``."""
    train_x, train_y = collect_activations(
        model, tokenizer, sample_sentences(N_ACTIVATION_SENTENCES, held_out=False, seed=SEED + 2)
    )
    eval_x, eval_y = collect_activations(
        model, tokenizer, sample_sentences(N_EVAL_SENTENCES, held_out=True, seed=SEED + 3)
    )
    log(f"activations: {train_x.shape[0]} training and {eval_x.shape[0]} held-out positions")
    stats = Standardizers.fit(train_x, train_y)
    x = (train_x - stats.in_mean) / stats.in_std
    y = (train_y - stats.out_mean) / stats.out_std
    n_layers, d_model = train_x.shape[1], train_x.shape[2]
    trained: dict[str, ToyTranscoder] = {}
    results: dict[str, Any] = {}
    for seed_offset, (folder, (kind, nonlinearity, folded)) in enumerate(TRANSCODER_SPECS.items()):
        torch.manual_seed(SEED + 100 + seed_offset)
        transcoder = ToyTranscoder(kind, n_layers, d_model, D_FEATURES, TOPK_K)
        steps = TRANSCODER_STEPS
        if nonlinearity == "JumpReLU":
            # Start from the trained TopK CLT, with per-layer thresholds at its sparsity.
            transcoder.load_state_dict(trained["clt"].state_dict())
            with torch.no_grad():
                pre = transcoder.pre_activations(x[:4096])
                quantile = 1 - JUMPRELU_TARGET_L0 / D_FEATURES
                theta = torch.quantile(pre.transpose(0, 1).reshape(n_layers, -1), quantile, dim=1)
                transcoder.log_theta.copy_(
                    theta.clamp_min(1e-2).log().unsqueeze(1).expand(-1, D_FEATURES)
                )
            transcoder.log_theta.requires_grad_(True)
            transcoder.jumprelu = True
            steps = JUMPRELU_STEPS
        final_mse = fit_transcoder(transcoder, x, y, steps, SEED + 200 + seed_offset, log, folder)
        trained[folder] = transcoder
        evaluation = evaluate_transcoder(transcoder, stats, eval_x, eval_y)
        log(f"{folder}: FVU {evaluation['fvu']}, L0 {evaluation['l0']}")
        nonlinearity_args: dict[str, Any] = (
            {"k": TOPK_K} if nonlinearity == "PerLayerTopK" else {"bandwidth": JUMPRELU_BANDWIDTH}
        )
        config = checkpoint_config(
            kind=kind,
            n_layers=n_layers,
            d_model=d_model,
            d_features=D_FEATURES,
            nonlinearity=nonlinearity,
            nonlinearity_args=nonlinearity_args,
            standardizer=None if folded else "dimensionwise",
            is_folded=folded,
        )
        write_checkpoint(out / folder, config, checkpoint_tensors(transcoder, stats, fold=folded))
        results[folder] = {
            "kind": kind,
            "nonlinearity": nonlinearity,
            "k": TOPK_K if nonlinearity == "PerLayerTopK" else None,
            "folded": folded,
            "d_features": D_FEATURES,
            "steps": steps,
            "final_mse_standardized": round(final_mse, 6),
            "held_out_fvu_per_layer": evaluation["fvu"],
            "held_out_l0_per_layer": evaluation["l0"],
        }
    return results


# --- a training run's checkpoints (docs/checkpoints.md, "Training runs") ---------------------

# A short run: enough held-out structure for the curve to rise, seconds on one core.
CHECKPOINT_RUN_SENTENCES = 600
CHECKPOINT_RUN_BATCH = 128


def checkpoint_folder_name(step: int) -> str:
    """``step-000300``: the folder of a training run's checkpoint, its step in its name."""
    return f"step-{step:06d}"


def train_checkpoints(
    out: Path, steps: list[int], log: Callable[[str], None], kind: str = "plt"
) -> list[Path]:
    """``write_run_checkpoints`` at one torch thread, as the whole training runs: these matrices
    are tiny, and on a shared machine a second thread made it eight times slower, not faster."""
    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        return write_run_checkpoints(out, steps, log, kind)
    finally:
        torch.set_num_threads(threads)


def write_run_checkpoints(
    out: Path, steps: list[int], log: Callable[[str], None], kind: str = "plt"
) -> list[Path]:
    """Train one toy TopK transcoder (``kind`` clt or plt) on the shipped toy model for
    ``max(steps)`` steps from its random start, writing a folded crosslayer-transcoder
    checkpoint ``out/step-NNNNNN`` (its step also as ``global_step`` in its config.yaml) once
    each of ``steps`` is done: a training run's output, for scoring its curve. A short run
    (``CHECKPOINT_RUN_SENTENCES`` sentences, batch ``CHECKPOINT_RUN_BATCH``), not the shipped
    transcoders' training. Returns the folders in step order."""
    from transformer_lens import HookedTransformer
    from transformers import GPT2TokenizerFast

    from tracerflow import toy
    from tracerflow.models import toy_model_config

    wanted = sorted(set(steps))
    if not wanted or wanted[0] < 1:
        raise ValueError(f"checkpoint steps must be whole numbers >= 1, got {steps}")
    tokenizer = GPT2TokenizerFast.from_pretrained(str(toy.tokenizer_dir()))
    model = HookedTransformer(toy_model_config())
    # The weights file holds the parameters (``write_model``); buffers are rebuilt from config.
    weights = load_file(str(toy.model_dir() / "model.safetensors"))
    _, unexpected = model.load_state_dict(weights, strict=False)
    missing = {name for name, _ in model.named_parameters()} - set(weights)
    if unexpected or missing:
        raise ValueError(
            f"{toy.model_dir()}: the shipped toy model's weights do not match its config "
            f"(unexpected {sorted(unexpected)[:3]}, missing {sorted(missing)[:3]})"
        )
    model.eval()
    train_x, train_y = collect_activations(
        model,
        tokenizer,
        sample_sentences(CHECKPOINT_RUN_SENTENCES, held_out=False, seed=SEED + 2),
    )
    stats = Standardizers.fit(train_x, train_y)
    x = (train_x - stats.in_mean) / stats.in_std
    y = (train_y - stats.out_mean) / stats.out_std
    n_layers, d_model = train_x.shape[1], train_x.shape[2]
    torch.manual_seed(SEED + 300)
    transcoder = ToyTranscoder(kind, n_layers, d_model, D_FEATURES, TOPK_K)
    config = checkpoint_config(
        kind=kind,  # type: ignore[arg-type]
        n_layers=n_layers,
        d_model=d_model,
        d_features=D_FEATURES,
        nonlinearity="PerLayerTopK",
        nonlinearity_args={"k": TOPK_K},
        is_folded=True,
    )
    written: list[Path] = []

    def save(done: int) -> None:
        if done in wanted:
            folder = out / checkpoint_folder_name(done)
            tensors = checkpoint_tensors(transcoder, stats, fold=True)
            write_checkpoint(folder, {**config, "global_step": done}, tensors)
            written.append(folder)
            log(f"wrote {folder}")

    fit_transcoder(
        transcoder,
        x,
        y,
        wanted[-1],
        SEED + 301,
        log,
        kind,
        after_step=save,
        batch=CHECKPOINT_RUN_BATCH,
    )
    return written


def write_model(model: Any, tokenizer: Any, out: Path) -> None:
    model_dir = out / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    fields = model_config_fields(len(tokenizer))
    (model_dir / "config.json").write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
    weights = {name: p.detach().contiguous() for name, p in model.named_parameters()}
    save_file(weights, str(model_dir / "model.safetensors"))


# --- the machine ---------------------------------------------------------------------------

# The SIMD extensions MKL, oneDNN and torch's own kernels choose their code paths by (x86, Arm).
SIMD_FLAG_PREFIXES = ("sse", "ssse3", "avx", "fma", "f16c", "amx", "asimd", "sve")
# Environment variables that override that choice (or, MKL_CBWR, MKL's reproducibility mode).
DISPATCH_VARIABLES = (
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
)
CPU_ID_FIELDS = ("vendor_id", "cpu family", "model", "stepping")
MATH_LIBRARY_LINE = re.compile(r"Math Kernel Library|MKL-DNN|oneDNN|OpenBLAS")


def _cpuinfo() -> dict[str, str]:
    """The first processor's ``/proc/cpuinfo`` fields (empty where there is no such file)."""
    path = Path("/proc/cpuinfo")
    if not path.is_file():
        return {}
    fields: dict[str, str] = {}
    for line in path.read_text().split("\n\n")[0].splitlines():
        key, _, value = line.partition(":")
        fields[key.strip()] = value.strip()
    return fields


def machine_signature() -> dict[str, Any]:
    """What decides how this script's floats round, besides its code and ``TORCH_THREADS``: the
    torch build, the math libraries linked into it (their versions, from ``torch.__config__``),
    transformer-lens (the model's arithmetic), the C library (``math.cos``/``exp`` of the
    schedules), the kernels torch dispatches to (``get_cpu_capability``), the CPU (model, vendor,
    family) and its SIMD extensions (MKL and oneDNN dispatch on them) and any variables that
    override dispatch.
    A rerun is byte-identical where this matches the signature recorded in ``training.json``."""
    cpuinfo = _cpuinfo()
    flags = (cpuinfo.get("flags") or cpuinfo.get("Features") or "").split()
    return {
        "torch": torch.__version__,
        "math_libraries": [
            line.strip(" -")
            for line in torch.__config__.show().splitlines()
            if MATH_LIBRARY_LINE.search(line)
        ],
        "transformer_lens": version("transformer-lens"),
        "libc": " ".join(platform.libc_ver()).strip(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_model": cpuinfo.get("model name") or platform.processor() or platform.machine(),
        # A virtual machine's model name is often generic; MKL also tunes by vendor and family.
        "cpu_id": {key: cpuinfo.get(key) for key in CPU_ID_FIELDS},
        "cpu_simd_flags": sorted(flag for flag in flags if flag.startswith(SIMD_FLAG_PREFIXES)),
        "dispatch_overrides": {
            name: os.environ[name] for name in DISPATCH_VARIABLES if name in os.environ
        },
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tracerflow.toy.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="data folder to (re)write")
    parser.add_argument(
        "--checkpoints-at",
        metavar="STEPS",
        help="instead: train one toy PLT on the shipped model, writing a checkpoint folder "
        "OUT/step-NNNNNN at each of these steps (comma-separated, e.g. 30,150,600)",
    )
    parser.add_argument(
        "--kind", choices=("clt", "plt"), default="plt", help="with --checkpoints-at"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(SEED)
    started = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f}s] {message}", flush=True)

    if args.checkpoints_at is not None:
        try:
            steps = [int(step) for step in args.checkpoints_at.split(",") if step.strip()]
        except ValueError:
            parser.error(
                f"--checkpoints-at: comma-separated whole numbers, got {args.checkpoints_at!r}"
            )
        if args.out == DEFAULT_OUT:
            parser.error("--checkpoints-at needs an --out folder (not the shipped data)")
        try:
            train_checkpoints(args.out, steps, log, kind=args.kind)
        except ValueError as error:
            parser.error(str(error))
        return

    out: Path = args.out
    for stale in ("tokenizer", "model", *TRANSCODER_SPECS):
        shutil.rmtree(out / stale, ignore_errors=True)
    tokenizer = build_tokenizer(out / "tokenizer")
    log(f"tokenizer: {len(tokenizer)} tokens")
    model, model_stats = train_model(tokenizer, log)
    write_model(model, tokenizer, out)
    transcoder_stats = train_transcoders(model, tokenizer, out, log)
    (out / EVAL_CORPUS_FILE).write_text("\n".join(eval_corpus_texts()) + "\n")
    record = {
        "seed": SEED,
        "torch_threads": TORCH_THREADS,
        "machine": machine_signature(),
        "tokenizer": {"vocab_size": len(tokenizer)},
        "model": {**model_stats, "batch_size": MODEL_BATCH, "shape": MODEL_SHAPE},
        "transcoders": transcoder_stats,
    }
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
