"""An independent plain-torch forward pass of a crosslayer-transcoder checkpoint.

Written from the format's definition, on the raw (unfolded) tensors, sharing no code with
``tracerflow.transcoders``: standardize the input, encode, apply the nonlinearity, decode,
de-standardize the output.
"""

from __future__ import annotations

import torch
import yaml
from safetensors.torch import load_file


def reference_forward(checkpoint_dir, resid_mid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [L, n_pos, F] and reconstructions [L, n_pos, d] of resid_mid [L, n_pos, d]."""
    config = yaml.safe_load((checkpoint_dir / "config.yaml").read_text())["model"]
    args = config["init_args"]
    folded = config.get("is_folded", False)
    t = {k: v.double() for k, v in load_file(checkpoint_dir / "checkpoint.safetensors").items()}
    x = resid_mid.double()
    n_layers = x.shape[0]

    def stats(prefix: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if folded or f"{prefix}.mean" not in t:
            return None
        mean, std = t[f"{prefix}.mean"], t[f"{prefix}.std"]
        if mean.ndim == 1:  # layerwise: one scalar per layer
            mean, std = mean[:, None], std[:, None]
        return mean[:, None, :], std[:, None, :]  # [L, 1, d or 1]

    in_stats = stats("input_standardizer")
    if in_stats is not None:
        x = (x - in_stats[0]) / in_stats[1]
    pre = torch.einsum("lpd,ldf->lpf", x, t["encoder.W"]) + t["encoder.b"][:, None, :]

    nonlinearity = args["nonlinearity"]["class_path"].rsplit(".", 1)[-1]
    if nonlinearity == "PerLayerTopK":
        k = args["nonlinearity"]["init_args"]["k"]
        kth = pre.topk(k, dim=-1).values[..., -1:]
        features = torch.where(pre >= kth, pre, 0).clamp_min(0)
    elif nonlinearity == "JumpReLU":
        theta = t["nonlinearity.theta"][0][:, None, :]
        features = torch.where((pre > theta) & (pre > 0), pre, 0)
    elif nonlinearity == "BatchTopK":
        threshold = max(0.0, t["nonlinearity.threshold"].item())
        features = torch.where(pre > threshold, pre, 0)
    elif nonlinearity == "PerLayerBatchTopK":
        threshold = t["nonlinearity.threshold"].clamp_min(0)[:, None, None]
        features = torch.where(pre > threshold, pre, 0)
    else:
        features = pre.clamp_min(0)

    recon = torch.zeros_like(x[..., :1]).expand(-1, -1, x.shape[-1]).clone()
    for target in range(n_layers):
        if "decoder.W_0" in t:  # CLT: every source layer up to the target writes to it
            contribution = torch.einsum(
                "lpf,lfd->pd", features[: target + 1], t[f"decoder.W_{target}"]
            )
        else:
            contribution = features[target] @ t["decoder.W"][target]
        recon[target] = contribution + t.get("decoder.b", torch.zeros(n_layers, 1))[target]
    out_stats = stats("output_standardizer")
    if out_stats is not None:
        recon = recon * out_stats[1] + out_stats[0]
    return features, recon
