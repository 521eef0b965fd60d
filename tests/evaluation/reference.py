"""Independent plain-torch transcoder metrics, for checking ``tracerflow.evaluation``.

Shares no code with what it checks: a plain ``HookedTransformer`` built from the toy model's
files (no circuit-tracer), its own float64 encode/decode read straight from a converted folder's
safetensors, the whole corpus in one padded batch, and each metric computed from full tensors
by its textbook formula (no running sums).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file


def plain_toy_model(model_dir: Path, tokenizer_dir: Path) -> Any:
    """The toy model as a plain TransformerLens ``HookedTransformer`` (fp32, CPU)."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    fields = json.loads((model_dir / "config.json").read_text())
    cfg = HookedTransformerConfig(**fields, tokenizer_name=str(tokenizer_dir), device="cpu")
    model = HookedTransformer(cfg)
    model.load_state_dict(load_file(str(model_dir / "model.safetensors")), strict=False)
    return model.eval()


class ReferenceTranscoder:
    """A converted folder (``tracerflow.json`` + circuit-tracer safetensors) in float64."""

    def __init__(self, folder: Path) -> None:
        manifest = json.loads((folder / "tracerflow.json").read_text())
        self.kind: str = manifest["kind"]
        self.n_layers: int = manifest["n_layers"]
        self.activation: str = manifest["activation"]["name"]
        self.k: int | None = manifest["activation"]["k"]
        self.w_enc, self.b_enc, self.b_dec, self.w_dec, self.threshold = [], [], [], [], []
        for layer in range(self.n_layers):
            if self.kind == "clt":
                enc = load_file(str(folder / f"W_enc_{layer}.safetensors"))
                dec = load_file(str(folder / f"W_dec_{layer}.safetensors"))[f"W_dec_{layer}"]
                names = (f"W_enc_{layer}", f"b_enc_{layer}", f"b_dec_{layer}", f"threshold_{layer}")
            else:
                enc = load_file(str(folder / f"layer_{layer}.safetensors"))
                dec = enc["W_dec"][:, None, :]  # [F, 1 target, d]
                names = ("W_enc", "b_enc", "b_dec", "threshold")
            self.w_enc.append(enc[names[0]].double())  # [F, d]
            self.b_enc.append(enc[names[1]].double())
            self.b_dec.append(enc[names[2]].double())
            self.threshold.append(enc[names[3]].double() if names[3] in enc else None)
            self.w_dec.append(dec.double())  # [F, n_targets, d]

    def encode(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """Features ``[..., F]`` (float64) of ``x [..., d]``."""
        pre = x.double() @ self.w_enc[layer].T + self.b_enc[layer]
        if self.activation == "topk":
            kth = pre.topk(self.k, dim=-1).values[..., -1:]  # type: ignore[arg-type]
            return torch.where(pre >= kth, pre, 0).clamp_min(0)
        if self.activation == "jump_relu":
            return torch.where(pre > self.threshold[layer], pre, 0)  # type: ignore[operator]
        return pre.clamp_min(0)

    def contributions(self, layer: int, features: torch.Tensor) -> list[torch.Tensor]:
        """What layer ``layer``'s features write to each target layer ``layer, layer+1, ...``."""
        return [
            features @ self.w_dec[layer][:, offset] for offset in range(self.w_dec[layer].shape[1])
        ]


def reference_metrics(
    model: Any, transcoder: ReferenceTranscoder, windows: list[list[int]]
) -> dict:
    """Every metric by its formula; positions: real and not the first (BOS) of a window."""
    width = max(len(w) for w in windows)
    tokens = torch.full((len(windows), width), windows[0][0])
    real = torch.zeros(len(windows), width, dtype=torch.bool)
    for row, window in enumerate(windows):
        tokens[row, : len(window)] = torch.tensor(window)
        real[row, : len(window)] = True
    evaluated = real.clone()
    evaluated[:, 0] = False
    has_next = torch.zeros_like(real)
    has_next[:, :-1] = real[:, 1:]
    predicted = (evaluated & has_next)[evaluated]
    targets = torch.cat([tokens[:, 1:], tokens[:, :1]], 1)[evaluated]
    n_layers = transcoder.n_layers

    with torch.no_grad():
        logits, cache = model.run_with_cache(tokens)
        per_layer = []
        features = [
            transcoder.encode(layer, cache[f"blocks.{layer}.hook_resid_mid"][evaluated])
            for layer in range(n_layers)
        ]
        for target in range(n_layers):
            y = cache[f"blocks.{target}.hook_mlp_out"][evaluated].double()
            y_hat = transcoder.b_dec[target].expand_as(y).clone()
            for source in range(target + 1):
                writes = transcoder.contributions(source, features[source])
                if target - source < len(writes):
                    y_hat += writes[target - source]
            density = (features[target] > 0).double().mean(0)
            per_layer.append(
                {
                    "squared_error": (y - y_hat).pow(2).sum().item(),
                    "total_variance": (y - y.mean(0)).pow(2).sum().item(),
                    "l0": (features[target] > 0).double().sum(-1).mean().item(),
                    "dead_share": (density == 0).double().mean().item(),
                    "dense_1pct_share": (density > 0.01).double().mean().item(),
                    "dense_10pct_share": (density > 0.1).double().mean().item(),
                }
            )

        def replaced(hooks_state: dict) -> list:
            def read(acts: torch.Tensor, hook: Any, layer: int) -> None:
                f = transcoder.encode(layer, acts[evaluated])
                for offset, write in enumerate(transcoder.contributions(layer, f)):
                    hooks_state[layer + offset] = hooks_state.get(layer + offset, 0) + write

            def write(acts: torch.Tensor, hook: Any, layer: int) -> torch.Tensor:
                out = acts.clone()
                out[evaluated] = (hooks_state[layer] + transcoder.b_dec[layer]).float()
                return out

            hooks = []
            for layer in range(n_layers):
                hooks.append((f"blocks.{layer}.hook_resid_mid", partial(read, layer=layer)))
                hooks.append((f"blocks.{layer}.hook_mlp_out", partial(write, layer=layer)))
            return hooks

        def zeroed(acts: torch.Tensor, hook: Any) -> torch.Tensor:
            out = acts.clone()
            out[evaluated] = 0
            return out

        replacement_logits = model.run_with_hooks(tokens, fwd_hooks=replaced({}))
        ablated_logits = model.run_with_hooks(
            tokens,
            fwd_hooks=[(f"blocks.{layer}.hook_mlp_out", zeroed) for layer in range(n_layers)],
        )

    def log_probs(raw: torch.Tensor) -> torch.Tensor:
        return raw[evaluated].double().log_softmax(-1)

    lp_original, lp_replacement, lp_ablated = map(
        log_probs, (logits, replacement_logits, ablated_logits)
    )

    def ce(lp: torch.Tensor) -> float:
        return -lp.gather(-1, targets[:, None])[:, 0][predicted].mean().item()

    kl = (lp_original.exp() * (lp_original - lp_replacement)).sum(-1).mean().item()
    ce_o, ce_r, ce_a = ce(lp_original), ce(lp_replacement), ce(lp_ablated)
    return {
        "n_tokens": int(evaluated.sum()),
        "layers": per_layer,
        "fvu_pooled": sum(p["squared_error"] for p in per_layer)
        / sum(p["total_variance"] for p in per_layer),
        "kl": kl,
        "top1_agreement": (lp_original.argmax(-1) == lp_replacement.argmax(-1))
        .double()
        .mean()
        .item(),
        "ce_original": ce_o,
        "ce_replacement": ce_r,
        "ce_ablated": ce_a,
        "ce_loss_recovered": (ce_a - ce_r) / (ce_a - ce_o),
    }
