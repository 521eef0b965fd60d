"""Tiny stand-ins of the models circuit-tracer's published transcoders sit on, built offline in
seconds with random weights: Llama-, Qwen3- and Gemma-2-architecture local model folders (2 layers,
d_model 64), circuit-tracer-format PLTs and CLTs with the hooks the published sets use, and a
Hub-shaped cache holding ``Qwen/Qwen3-0.6B`` at reduced size.

A local model folder is what ``tracerflow run --model FOLDER`` reads (``model_sources``):
``config.json`` (``HookedTransformerConfig`` fields), ``model.safetensors`` (``HookedTransformer``
parameters by name) and the tokenizer's files, here ``tests.synthetic.build_tokenizer``'s.
Each architecture's fields are the ones TransformerLens 3.2.1 gives the real model
(``loading_from_pretrained.convert_hf_model_config``), at toy size, grouped key/value heads
included.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

import torch
import yaml
from safetensors.torch import save, save_file

from tests.hub_cache import CachedRepo, write_hub_repo

N_LAYERS = 2
D_MODEL = 64
N_FEATURES = 32
N_HEADS = 4
QWEN3_REPO = "Qwen/Qwen3-0.6B"

# The hooks the published sets use: circuit-tracer's PLT configs (GemmaScope, the Llama and
# Qwen3 transcoders) read the MLP's normalised input and write its output; its CLTs keep
# load_clt's defaults, the residual stream before the MLP.
PLT_HOOKS = ("ln2.hook_normalized", "hook_mlp_out")
CLT_HOOKS = ("hook_resid_mid", "hook_mlp_out")

# Llama-3's rotary positions: a base of 500 000, scaled by frequency band (NTK by parts).
LLAMA3_ROPE: dict[str, Any] = {
    "rotary_base": 500000.0,
    "use_NTK_by_parts_rope": True,
    "NTK_by_parts_low_freq_factor": 1.0,
    "NTK_by_parts_high_freq_factor": 4.0,
    "NTK_by_parts_factor": 32.0,
    "NTK_original_ctx_len": 8192,
}
_COMMON: dict[str, Any] = {
    "n_layers": N_LAYERS,
    "d_model": D_MODEL,
    "n_heads": N_HEADS,
    "d_mlp": 128,
    "n_ctx": 256,
    "normalization_type": "RMS",
    "positional_embedding_type": "rotary",
    "rotary_adjacent_pairs": False,
    "final_rms": True,
    "gated_mlp": True,
}
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "llama": {
        **_COMMON,
        "original_architecture": "LlamaForCausalLM",
        "d_head": 16,
        "n_key_value_heads": 2,
        "rotary_dim": 16,
        "act_fn": "silu",
        "eps": 1e-5,
        **LLAMA3_ROPE,
    },
    "qwen3": {
        **_COMMON,
        "original_architecture": "Qwen3ForCausalLM",
        "d_head": 32,  # like Qwen3-0.6B, n_heads * d_head is not d_model
        "n_key_value_heads": 2,
        "rotary_dim": 32,
        "act_fn": "silu",
        "eps": 1e-6,
        "rotary_base": 1000000,
        "use_attn_scale": True,
        "use_qk_norm": True,
        "default_prepend_bos": False,
    },
    "gemma2": {
        **_COMMON,
        "original_architecture": "Gemma2ForCausalLM",
        "d_head": 32,
        "rotary_dim": 32,
        "n_key_value_heads": 2,
        "act_fn": "gelu_pytorch_tanh",
        "eps": 1e-6,
        "rotary_base": 10000.0,
        "use_attn_scale": True,
        "window_size": 4,
        "use_local_attn": True,
        "attn_types": ["global", "local"],
        "attn_scores_soft_cap": 50.0,
        "output_logits_soft_cap": 30.0,
        "use_normalization_before_and_after": True,
    },
}


def tokenizer_size(tokenizer_dir: Path) -> int:
    from transformers import AutoTokenizer

    return len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))


def write_model_folder(folder: Path, architecture: str, tokenizer_dir: Path, seed: int) -> Path:
    """A local model folder of ``architecture`` with seeded random weights."""
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    fields = {**ARCHITECTURES[architecture], "d_vocab": tokenizer_size(tokenizer_dir)}
    config = HookedTransformerConfig(
        **fields, tokenizer_name=str(tokenizer_dir), init_weights=True, seed=seed, device="cpu"
    )
    model = HookedTransformer(config)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {name: p.detach().contiguous() for name, p in model.named_parameters()}
    save_file(weights, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(fields, indent=2))
    for path in tokenizer_dir.iterdir():
        shutil.copyfile(path, folder / path.name)
    return folder


def write_transcoder(
    folder: Path,
    kind: Literal["plt", "clt"],
    *,
    seed: int,
    hooks: tuple[str, str] | None = None,
    activation: Literal["relu", "jump_relu"] = "jump_relu",
    n_layers: int = N_LAYERS,
    d_model: int = D_MODEL,
    n_features: int = N_FEATURES,
) -> Path:
    """A circuit-tracer transcoder folder with seeded random weights and its ``config.yaml``:
    PLT ``layer_{i}.safetensors``, CLT ``W_enc_{i}``/``W_dec_{i}.safetensors``."""
    hooks = hooks or (PLT_HOOKS if kind == "plt" else CLT_HOOKS)
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    folder.mkdir(parents=True, exist_ok=True)
    for layer in range(n_layers):
        encoder = {
            "W_enc": randn(n_features, d_model, scale=d_model**-0.5),
            "b_enc": randn(n_features, scale=0.1),
            "b_dec": randn(d_model, scale=0.02),
        }
        threshold = torch.rand(n_features, generator=generator) * 0.1
        n_targets = 1 if kind == "plt" else n_layers - layer
        decoder = randn(n_features, n_targets, d_model, scale=n_features**-0.5)
        if kind == "plt":
            tensors = {**encoder, "W_dec": decoder[:, 0]}
            if activation == "jump_relu":
                tensors["activation_function.threshold"] = threshold
            save_file(tensors, str(folder / f"layer_{layer}.safetensors"))
        else:
            tensors = {f"{name}_{layer}": tensor for name, tensor in encoder.items()}
            if activation == "jump_relu":
                tensors[f"threshold_{layer}"] = threshold
            save_file(tensors, str(folder / f"W_enc_{layer}.safetensors"))
            save_file({f"W_dec_{layer}": decoder}, str(folder / f"W_dec_{layer}.safetensors"))
    config = {
        "model_kind": "transcoder_set" if kind == "plt" else "cross_layer_transcoder",
        "feature_input_hook": hooks[0],
        "feature_output_hook": hooks[1],
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


# --- Qwen/Qwen3-0.6B in a Hub-shaped cache ---------------------------------------------------


def qwen3_files(tokenizer_dir: Path, seed: int) -> dict[str, bytes]:
    """The files of the ``Qwen/Qwen3-0.6B`` repo that TransformerLens reads, at 2 layers and
    d_model 64: ``config.json`` and ``generation_config.json`` as transformers writes them for a
    ``Qwen3ForCausalLM`` (grouped key/value heads and a head size apart from d_model / n_heads,
    as in the real one), seeded random ``model.safetensors`` under the Hub's tensor names, and
    the tiny tokenizer's files."""
    import tempfile

    from safetensors.torch import load_file
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    config = Qwen3Config(
        vocab_size=tokenizer_size(tokenizer_dir),
        hidden_size=D_MODEL,
        intermediate_size=128,
        num_hidden_layers=N_LAYERS,
        num_attention_heads=N_HEADS,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    model = Qwen3ForCausalLM(config)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        files = {name: (Path(tmp) / name).read_bytes() for name in ("config.json",)}
        if (Path(tmp) / "generation_config.json").is_file():
            files["generation_config.json"] = (Path(tmp) / "generation_config.json").read_bytes()
        tensors = load_file(str(Path(tmp) / "model.safetensors"))
    files["model.safetensors"] = save(tensors, metadata={"format": "pt"})
    for path in tokenizer_dir.iterdir():
        files[path.name] = path.read_bytes()
    return files


def write_qwen3_hub_repo(hub_cache: Path, tokenizer_dir: Path, seed: int = 0) -> CachedRepo:
    """``Qwen/Qwen3-0.6B`` at reduced size in ``hub_cache`` (``HF_HOME/hub``)."""
    return write_hub_repo(hub_cache, QWEN3_REPO, qwen3_files(tokenizer_dir, seed))
