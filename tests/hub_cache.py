"""A Hugging Face Hub cache holding the real presets' repos, built offline with random weights.

The layout is what ``huggingface_hub`` leaves after a download (``HF_HUB_CACHE``)::

    models--<org>--<name>/refs/main                 the commit sha (40 hex, no newline)
    models--<org>--<name>/blobs/<etag>              each file's bytes
    models--<org>--<name>/snapshots/<sha>/<file>    -> ../../blobs/<etag>

where the etag of an LFS file (``*.safetensors``, ``*.npz``) is its sha256 and that of a plain git
file its git blob sha1. The repos:
  - ``gpt2``, the id TransformerLens 3.2.1 gives transformers for the name ``gpt2``: GPT-2 small's
    ``config.json`` (12 layers, d 768, d_mlp 3072: TransformerLens takes ``4 * n_embd``, whatever
    ``n_inner`` says) with the toy tokenizer's 421-token vocabulary instead of 50 257, and the
    files of the real repo that transformers asks for offline: ``generation_config.json``,
    ``vocab.json``, ``merges.txt``, ``tokenizer.json``, ``tokenizer_config.json`` and seeded
    random ``model.safetensors`` (GPT-2's own key names, float32, 330 MB);
  - the two georglange transcoders, folded crosslayer-transcoder checkpoints exactly as that
    library writes them (``config.yaml`` is ``yaml.dump({"model": ...})``), 12 layers × d 768,
    PerLayerTopK k=16, with ``N_FEATURES`` features per layer instead of 16 000.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import yaml
from safetensors.torch import save

from tracerflow import toy

GPT2_REPO = "gpt2"
CLT_REPO = "georglange/crosslayer-transcoder-topk-16k"
PLT_REPO = "georglange/crosslayer-transcoder-topk-plt-16k"

N_LAYERS = 12
D_MODEL = 768
N_FEATURES = 128  # per layer; the published transcoders have 16 000
TOP_K = 16
LFS_SUFFIXES = (".safetensors", ".npz")  # what the Hub's default .gitattributes sends to LFS

_UPSTREAM = "crosslayer_transcoder.model"


@dataclass(frozen=True)
class CachedRepo:
    repo_id: str
    commit_sha: str
    snapshot: Path  # HF_HUB_CACHE/models--.../snapshots/<commit_sha>


@dataclass(frozen=True)
class HubCache:
    hf_home: Path  # set HF_HOME to this; the cache proper is hf_home / "hub"
    repos: dict[str, CachedRepo]  # by repo id

    @property
    def hub_cache(self) -> Path:
        return self.hf_home / "hub"


def git_blob_sha1(content: bytes) -> str:
    """The id git (and so the Hub's etag) gives a non-LFS file."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def write_hub_repo(
    hub_cache: Path, repo_id: str, files: Mapping[str, bytes], ref: str = "main"
) -> CachedRepo:
    """Lay ``files`` out as one commit of ``repo_id`` in ``hub_cache`` (see the module doc).
    The commit sha is derived from the files, so the same files give the same sha."""
    repo_dir = hub_cache / f"models--{repo_id.replace('/', '--')}"
    etags = {
        name: hashlib.sha256(content).hexdigest()
        if name.endswith(LFS_SUFFIXES)
        else git_blob_sha1(content)
        for name, content in files.items()
    }
    tree = "".join(f"{name} {etags[name]}\n" for name in sorted(files))
    commit_sha = hashlib.sha1(f"{repo_id}\n{tree}".encode()).hexdigest()
    snapshot = repo_dir / "snapshots" / commit_sha
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (repo_dir / "refs").mkdir(exist_ok=True)
    snapshot.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (repo_dir / "blobs" / etags[name]).write_bytes(content)
        link = snapshot / name  # a file in a folder of the repo links one level further up
        link.parent.mkdir(parents=True, exist_ok=True)
        up = [".."] * (len(Path(name).parts) + 1)
        link.symlink_to(Path(*up, "blobs", etags[name]))
    (repo_dir / "refs" / ref).write_text(commit_sha)  # huggingface_hub writes it without newline
    return CachedRepo(repo_id=repo_id, commit_sha=commit_sha, snapshot=snapshot)


# --- the transcoders ---------------------------------------------------------------------------


def upstream_config(
    kind: Literal["clt", "plt"], n_layers: int, d_model: int, n_features: int, k: int
) -> str:
    """A folded PerLayerTopK checkpoint's ``config.yaml`` as crosslayer-transcoder writes it:
    ``yaml.dump({"model": model.to_config() + is_folded})`` (sorted keys). Like the library's own
    checkpoints, the CLT's PerLayerTopK has ``n_layers: null`` and the PLT's the layer count."""
    dims = {"d_acts": d_model, "d_features": n_features, "n_layers": n_layers}
    decoder = "CrosslayerDecoder" if kind == "clt" else "Decoder"
    model = {
        "class_path": f"{_UPSTREAM}.clt.CrossLayerTranscoder",
        "init_args": {
            "decoder": {"class_path": f"{_UPSTREAM}.clt.{decoder}", "init_args": dict(dims)},
            "encoder": {"class_path": f"{_UPSTREAM}.clt.Encoder", "init_args": dict(dims)},
            "input_standardizer": None,
            "nonlinearity": {
                "class_path": f"{_UPSTREAM}.topk.PerLayerTopK",
                "init_args": {"e": None, "k": k, "n_layers": n_layers if kind == "plt" else None},
            },
            "output_standardizer": None,
        },
        "is_folded": True,
    }
    return yaml.dump({"model": model})


def upstream_tensors(
    kind: Literal["clt", "plt"], n_layers: int, d_model: int, n_features: int, seed: int
) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a folded crosslayer-transcoder model, seeded random, float32:
    ``encoder.W`` [L, d, F], ``encoder.b`` [L, F], CLT ``decoder.W_{l}`` [l+1, F, d] or PLT
    ``decoder.W`` [L, F, d], ``decoder.b`` [L, d]."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int, scale: float) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    tensors = {
        "encoder.W": randn(n_layers, d_model, n_features, scale=d_model**-0.5),
        "encoder.b": randn(n_layers, n_features, scale=0.1),
    }
    if kind == "clt":
        for target in range(n_layers):
            tensors[f"decoder.W_{target}"] = randn(target + 1, n_features, d_model, scale=0.02)
    else:
        tensors["decoder.W"] = randn(n_layers, n_features, d_model, scale=0.02)
    tensors["decoder.b"] = randn(n_layers, d_model, scale=0.01)
    return tensors


def transcoder_files(kind: Literal["clt", "plt"], seed: int) -> dict[str, bytes]:
    """``config.yaml`` and ``checkpoint.safetensors`` of a georglange-shaped repo."""
    tensors = upstream_tensors(kind, N_LAYERS, D_MODEL, N_FEATURES, seed)
    return {
        "config.yaml": upstream_config(kind, N_LAYERS, D_MODEL, N_FEATURES, TOP_K).encode(),
        "checkpoint.safetensors": save(tensors),
    }


# --- GPT-2 -----------------------------------------------------------------------------------


def gpt2_config(vocab_size: int) -> dict[str, object]:
    """openai-community/gpt2's ``config.json``, vocabulary aside."""
    end_of_text = vocab_size - 1
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": end_of_text,
        "embd_pdrop": 0.1,
        "eos_token_id": end_of_text,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": 1024,
        "n_embd": D_MODEL,
        "n_head": 12,
        "n_layer": N_LAYERS,
        "n_positions": 1024,
        "resid_pdrop": 0.1,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "task_specific_params": {"text-generation": {"do_sample": True, "max_length": 50}},
        "vocab_size": vocab_size,
    }


def gpt2_tensors(vocab_size: int, seed: int) -> dict[str, torch.Tensor]:
    """GPT-2's ``model.safetensors`` keys (``wte.weight``, ``h.{l}.attn.c_attn.weight``, ...;
    Conv1D weights are [in, out]; the LM head is tied to ``wte``), seeded random, float32."""
    generator = torch.Generator().manual_seed(seed)
    d, d_mlp = D_MODEL, 4 * D_MODEL

    def randn(*shape: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    tensors = {"wte.weight": randn(vocab_size, d), "wpe.weight": randn(1024, d, scale=0.01)}
    for layer in range(N_LAYERS):
        prefix = f"h.{layer}."
        tensors |= {
            prefix + "ln_1.weight": torch.ones(d),
            prefix + "ln_1.bias": torch.zeros(d),
            prefix + "attn.c_attn.weight": randn(d, 3 * d),
            prefix + "attn.c_attn.bias": torch.zeros(3 * d),
            prefix + "attn.c_proj.weight": randn(d, d),
            prefix + "attn.c_proj.bias": torch.zeros(d),
            prefix + "ln_2.weight": torch.ones(d),
            prefix + "ln_2.bias": torch.zeros(d),
            prefix + "mlp.c_fc.weight": randn(d, d_mlp),
            prefix + "mlp.c_fc.bias": torch.zeros(d_mlp),
            prefix + "mlp.c_proj.weight": randn(d_mlp, d),
            prefix + "mlp.c_proj.bias": torch.zeros(d),
        }
    tensors |= {"ln_f.weight": torch.ones(d), "ln_f.bias": torch.zeros(d)}
    return tensors


def gpt2_files(seed: int) -> dict[str, bytes]:
    """The files of the ``gpt2`` repo that loading it needs: the model's ``config.json`` and
    weights, and a GPT-2-format tokenizer (the toy model's byte-level BPE)."""
    tokenizer = toy.tokenizer_dir()
    bpe = json.loads((tokenizer / "tokenizer.json").read_text())
    ids = [*bpe["model"]["vocab"].values(), *(token["id"] for token in bpe["added_tokens"])]
    vocab_size = max(ids) + 1  # <|endoftext|>, the last id, is an added token
    files = {
        name: (tokenizer / name).read_bytes()
        for name in ("vocab.json", "merges.txt", "tokenizer.json")
    }
    files["tokenizer_config.json"] = json.dumps({"model_max_length": 1024}).encode()
    files["config.json"] = json.dumps(gpt2_config(vocab_size), indent=2).encode()
    end_of_text = vocab_size - 1
    files["generation_config.json"] = json.dumps(
        {"_from_model_config": True, "bos_token_id": end_of_text, "eos_token_id": end_of_text}
    ).encode()
    files["model.safetensors"] = save(gpt2_tensors(vocab_size, seed), metadata={"format": "pt"})
    return files


def build_hub_cache(hf_home: Path) -> HubCache:
    """``HF_HOME`` with ``gpt2`` and the two georglange repos in its hub cache."""
    hub_cache = hf_home / "hub"
    repos = [
        write_hub_repo(hub_cache, GPT2_REPO, gpt2_files(seed=0)),
        write_hub_repo(hub_cache, CLT_REPO, transcoder_files("clt", seed=1)),
        write_hub_repo(hub_cache, PLT_REPO, transcoder_files("plt", seed=2)),
    ]
    return HubCache(hf_home=hf_home, repos={repo.repo_id: repo for repo in repos})
