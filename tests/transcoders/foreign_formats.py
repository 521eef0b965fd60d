"""Transcoder folders in the formats tracerflow reads besides ``save_pretrained``'s, each written
the way that format's own writer writes it:

- circuit-tracer folders by circuit-tracer's own ``to_safetensors`` (``TranscoderSet``,
  ``CrossLayerTranscoder``) of a transcoder its own loaders loaded, with or without the
  ``config.yaml`` its Hub repos carry;
- crosslayer-transcoder Lightning ``clt.ckpt`` files by ``torch.save`` of the dict Lightning's
  ``save_checkpoint`` writes (Lightning is not installed here): the LightningModule's state dict,
  the transcoder's tensors under its attribute ``model.``, beside the module's own buffer and
  optimizer moments, and plain ``hyper_parameters``.

Each is derived from a crosslayer-transcoder checkpoint folder (the upstream fixtures, the toy
transcoders), so its tensors are that folder's.
"""

from __future__ import annotations

import io
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from circuit_tracer.transcoder import load_transcoder_set
from circuit_tracer.transcoder.cross_layer_transcoder import load_clt
from safetensors.torch import load_file

from tracerflow.transcoders import convert, read_manifest

UPSTREAM = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "upstream-checkpoints"
UPSTREAM_NAMES = ("a_clt_topk_folded", "c_plt_topk_folded", "d_clt_jumprelu_folded")
_PKG = "crosslayer_transcoder.model"
LIGHTNING_MODULE = f"{_PKG}.clt_lightning.TopKCrossLayerTranscoderModule"


def circuit_tracer_folder(
    checkpoint_dir: Path, out: Path, config: dict[str, Any] | None = None
) -> Path:
    """``checkpoint_dir`` as circuit-tracer writes it: converted, loaded by circuit-tracer's own
    loaders and saved by its own ``to_safetensors``; ``config`` becomes its ``config.yaml``."""
    converted = convert(checkpoint_dir, out.parent / f"{out.name}-converted")
    manifest = read_manifest(converted)
    load_with_circuit_tracer(converted, manifest.kind, manifest.n_layers).to_safetensors(str(out))
    if config is not None:
        (out / "config.yaml").write_text(yaml.safe_dump(config))
    return out


def load_with_circuit_tracer(folder: Path, kind: str, n_layers: int) -> Any:
    """A circuit-tracer folder as circuit-tracer 0.5.0 itself loads it (every weight in memory):
    ``load_clt`` for a CLT, ``load_transcoder_set`` for a PLT."""
    if kind == "clt":
        return load_clt(str(folder), device="cpu", dtype=torch.float32, lazy_decoder=False)
    return load_transcoder_set(
        {i: str(folder / f"layer_{i}.safetensors") for i in range(n_layers)},
        scan="circuit-tracer",
        feature_input_hook="hook_resid_mid",
        feature_output_hook="hook_mlp_out",
        device="cpu",
        dtype=torch.float32,
        lazy_encoder=False,
        lazy_decoder=False,
    )


def circuit_tracer_config(kind: str, **fields: Any) -> dict[str, Any]:
    """A circuit-tracer ``config.yaml`` of a local set: its keys, GPT-2-style hooks."""
    return {
        "model_kind": "cross_layer_transcoder" if kind == "clt" else "transcoder_set",
        "feature_input_hook": "hook_resid_mid",
        "feature_output_hook": "hook_mlp_out",
        **fields,
    }


@dataclass
class TrainingNotes:
    """An object of a class of the test's own: what torch's weights-only loader refuses."""

    note: str = "trained on a Tuesday"


def lightning_checkpoint(
    checkpoint_dir: Path,
    out: Path,
    *,
    config_in_hyper_parameters: bool = True,
    extra_hyper_parameters: dict[str, Any] | None = None,
) -> Path:
    """A ``clt.ckpt`` in ``out`` holding ``checkpoint_dir``'s tensors as the library's Lightning
    module saves them. Its hyper_parameters carry the transcoder's config tree as ``model``, or
    (``config_in_hyper_parameters=False``, what the library's own module does: it leaves ``model``
    out) ``out`` gets the training run's LightningCLI ``config.yaml`` beside the file."""
    out.mkdir(parents=True)
    config = yaml.safe_load((checkpoint_dir / "config.yaml").read_text())
    encoder = config["model"]["init_args"]["encoder"]["init_args"]
    tensors = load_file(checkpoint_dir / "checkpoint.safetensors")
    state: OrderedDict[str, torch.Tensor] = OrderedDict(
        (f"model.{key}", value) for key, value in tensors.items()
    )
    state["last_active"] = torch.zeros(encoder["n_layers"], encoder["d_features"], dtype=torch.long)
    hyper_parameters: dict[str, Any] = {
        "_class_path": LIGHTNING_MODULE,
        "learning_rate": 1e-4,
        "compile": False,
        "lr_decay_step": 80_000,
        "lr_decay_factor": 0.1,
        "topk_aux": {"class_path": f"{_PKG}.topk.PerLayerTopK", "init_args": {"k": 512}},
        "tokens_till_dead": 500_000,
        **(extra_hyper_parameters or {}),
    }
    if config_in_hyper_parameters:
        hyper_parameters["model"] = config["model"]
    else:
        transcoder = {key: value for key, value in config["model"].items() if key != "is_folded"}
        training_config = {
            "seed_everything": 42,
            "trainer": {"max_steps": 100_000, "precision": "16-mixed"},
            "model": {
                "class_path": LIGHTNING_MODULE,
                "init_args": {"model": transcoder, "learning_rate": 1e-4},
            },
        }
        (out / "config.yaml").write_text(yaml.safe_dump(training_config))
    moments = {
        index: {
            "step": torch.tensor(93_000.0),
            "exp_avg": torch.zeros_like(value),
            "exp_avg_sq": torch.zeros_like(value),
        }
        for index, value in enumerate(tensors.values())
    }
    payload = {
        "epoch": 0,
        "global_step": 93_000,
        "pytorch-lightning_version": "2.5.2",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 1}}}},
        "callbacks": {},
        "optimizer_states": [
            {
                "state": moments,
                "param_groups": [
                    {"lr": 1e-4, "betas": (0.9, 0.999), "eps": 1e-8, "params": list(moments)}
                ],
            }
        ],
        "lr_schedulers": [],
        "hparams_name": "kwargs",
        "hyper_parameters": hyper_parameters,
    }
    torch.save(payload, out / "clt.ckpt")
    return out


def gemma_scope_npz(d_model: int, n_features: int, seed: int) -> bytes:
    """One GemmaScope ``params.npz``: ``numpy.savez`` of W_enc [d, F], W_dec [F, d], b_enc [F],
    b_dec [d] and positive JumpReLU thresholds [F], float32."""
    rng = np.random.default_rng(seed)
    arrays = {
        "W_enc": rng.standard_normal((d_model, n_features)) * d_model**-0.5,
        "W_dec": rng.standard_normal((n_features, d_model)) * 0.05,
        "b_enc": rng.standard_normal(n_features) * 0.1,
        "b_dec": rng.standard_normal(d_model) * 0.01,
        "threshold": rng.uniform(0.0, 0.3, n_features),
    }
    buffer = io.BytesIO()
    np.savez(buffer, **{key: value.astype(np.float32) for key, value in arrays.items()})
    return buffer.getvalue()


def gemma_scope_folder(
    folder: Path, n_layers: int, d_model: int = 64, n_features: int = 32
) -> Path:
    """A GemmaScope folder as ``google/gemma-scope-2b-pt-transcoders`` lays out one variant a
    layer: ``layer_{i}/width_16k/average_l0_{n}/params.npz``."""
    for layer in range(n_layers):
        path = folder / f"layer_{layer}" / "width_16k" / f"average_l0_{10 + layer}" / "params.npz"
        path.parent.mkdir(parents=True)
        path.write_bytes(gemma_scope_npz(d_model, n_features, seed=layer))
    return folder
