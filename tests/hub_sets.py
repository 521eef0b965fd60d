"""circuit-tracer's published transcoder sets as Hub-shaped repos (``tests/hub_cache.py``), at
reduced sizes: each preset's real file names, tensor names, dtypes and ``d_model``, with
``N_FEATURES`` features per layer and, where the format allows, fewer layers. What each layout is
and where it was read: docs/presets.md.

GemmaScope files are written as its ``params.npz`` are (``numpy.savez`` of five float32 arrays,
``W_enc`` [d_model, F]); circuit-tracer files as its own ``to_safetensors`` names them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from safetensors.torch import save

from tests.hub_cache import CachedRepo, write_hub_repo
from tests.transcoders.foreign_formats import gemma_scope_npz
from tracerflow.presets import Layout, Preset

N_FEATURES = 32
GEMMA_SCOPE_REPO = "google/gemma-scope-2b-pt-transcoders"
# The first two layers of mntss/gemma-scope-transcoders' list (circuit-tracer's former
# gemmascope-l0-0.yaml): GemmaScope's variant folder names, one average L0 per layer.
GEMMA_SCOPE_L0 = (76, 65, 49, 54)
# The hooks each set's config names (docs/presets.md says which are confirmed).
HOOKS = {
    "gemma-scope": ("ln2.hook_normalized", "hook_mlp_out"),
    "mntss/clt-gemma-2-2b-426k": ("hook_resid_mid", "hook_mlp_out"),
    "mntss/clt-llama-3.2-1b-524k": ("hook_resid_mid", "hook_mlp_out"),
    "mntss/transcoder-Llama-3.2-1B": ("hook_resid_mid", "mlp.hook_out"),
    "qwen3": ("mlp.hook_in", "mlp.hook_out"),
}
_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class PublishedSet:
    """A preset's repos in the cache: its own (``repo``) and, for a Hub config, the repo its
    files are in (``files_repo``); ``layout`` the reduced layout they were written with."""

    repo: CachedRepo
    files_repo: CachedRepo | None
    layout: Layout


def reduced(layout: Layout, n_layers: int) -> Layout:
    return layout.model_copy(update={"n_layers": n_layers, "d_features": N_FEATURES})


def layer_files(layout: Layout, kind: str, seed: int) -> dict[str, bytes]:
    """circuit-tracer's files of ``layout``: PLT ``layer_{i}.safetensors`` (W_enc, W_dec, b_enc,
    b_dec, W_skip and activation_function.threshold where the layout has them), CLT
    ``W_enc_{i}.safetensors`` (W_enc_i, b_enc_i, b_dec_i, threshold_i) and
    ``W_dec_{i}.safetensors`` (W_dec_i [F, L - i, d])."""
    generator = torch.Generator().manual_seed(seed)
    dtype = _TORCH_DTYPES[layout.dtype]
    n_layers, d, features = layout.n_layers, layout.d_model, layout.d_features or N_FEATURES

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * scale).to(dtype)

    files = {}
    for layer in range(n_layers):
        if kind == "plt":
            tensors = {
                "W_enc": randn(features, d, scale=d**-0.5),
                "W_dec": randn(features, d, scale=0.05),
                "b_enc": randn(features, scale=0.1),
                "b_dec": randn(d, scale=0.01),
            }
            if layout.skip:
                tensors["W_skip"] = randn(d, d, scale=0.01)
            if layout.thresholds:
                tensors["activation_function.threshold"] = randn(features, scale=0.1).abs()
            files[f"layer_{layer}.safetensors"] = save(tensors)
        else:
            encoder = {
                f"W_enc_{layer}": randn(features, d, scale=d**-0.5),
                f"b_enc_{layer}": randn(features, scale=0.1),
                f"b_dec_{layer}": randn(d, scale=0.01),
            }
            if layout.thresholds:
                encoder[f"threshold_{layer}"] = randn(features, scale=0.1).abs()
            files[f"W_enc_{layer}.safetensors"] = save(encoder)
            decoder = {f"W_dec_{layer}": randn(features, n_layers - layer, d, scale=0.05)}
            files[f"W_dec_{layer}.safetensors"] = save(decoder)
    return files


def hub_config(kind: str, hooks: tuple[str, str], **fields: object) -> bytes:
    """A circuit-tracer Hub ``config.yaml``."""
    config = {
        "model_kind": "cross_layer_transcoder" if kind == "clt" else "transcoder_set",
        "feature_input_hook": hooks[0],
        "feature_output_hook": hooks[1],
        **fields,
    }
    return yaml.safe_dump(config, sort_keys=False).encode()


def write_published_set(hub_cache: Path, preset: Preset, n_layers: int, seed: int) -> PublishedSet:
    """``preset``'s repo (and the repo its config points into) at ``n_layers`` layers and
    ``N_FEATURES`` features per layer."""
    assert preset.layout is not None
    layout = reduced(preset.layout, n_layers)
    if layout.format == "gemma-scope":
        google = {}
        entries = []
        for layer in range(n_layers):
            l0 = GEMMA_SCOPE_L0[layer % len(GEMMA_SCOPE_L0)]
            chosen = f"layer_{layer}/width_16k/average_l0_{l0}/params.npz"
            other = f"layer_{layer}/width_16k/average_l0_{l0 * 3}/params.npz"  # not listed
            google[chosen] = gemma_scope_npz(layout.d_model, N_FEATURES, seed + layer)
            google[other] = gemma_scope_npz(layout.d_model, N_FEATURES, seed + 100 + layer)
            entries.append(f"hf://{GEMMA_SCOPE_REPO}/{chosen}")
        files_repo = write_hub_repo(hub_cache, GEMMA_SCOPE_REPO, google)
        config = hub_config(
            "plt", HOOKS["gemma-scope"], model_name=preset.model, transcoders=entries
        )
        repo = write_hub_repo(hub_cache, preset.transcoder, {"config.yaml": config})
        return PublishedSet(repo, files_repo, layout)
    hooks = HOOKS["qwen3"] if preset.transcoder.startswith("mwhanna/qwen3") else None
    hooks = hooks or HOOKS[preset.transcoder]
    files = layer_files(layout, preset.kind, seed)
    files["config.yaml"] = hub_config(preset.kind, hooks, model_name=preset.model)
    repo = write_hub_repo(hub_cache, preset.transcoder, files)
    return PublishedSet(repo, None, layout)
