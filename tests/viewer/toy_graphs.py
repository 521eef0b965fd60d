"""Real attribution graphs from a tiny random model, for the viewer tests.

A 2-layer, d_model 64 HookedTransformer with a GPT-2-format byte-level BPE tokenizer trained
offline, and a small random CLT or PLT (circuit-tracer's own transcoder classes), run through
``circuit_tracer.attribute`` (~0.1 s per graph). When the package's toy preset lands, only
``build_replacement_model`` needs to change.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

os.environ.setdefault("HF_HUB_OFFLINE", "1")

N_LAYERS = 2
D_MODEL = 64
CORPUS = [
    "Mary and John went to the store, John gave a drink to Mary.",
    "The cat sat on the mat. The dog sat on the log.",
    "When Alice and Bob met, Bob handed the book to Alice.",
]


def build_tokenizer(tokenizer_dir: Path) -> Path:
    """Train a tiny GPT-2-format byte-level BPE; ``<|endoftext|>`` is the last id."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=[],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    tokenizer.add_special_tokens(["<|endoftext|>"])
    fast = GPT2TokenizerFast(
        tokenizer_object=tokenizer,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.save_pretrained(str(tokenizer_dir))
    return tokenizer_dir


def build_replacement_model(
    tokenizer_dir: Path,
    kind: Literal["clt", "plt"],
    *,
    d_transcoder: int = 16,
    seed: int = 0,
    layer0_boost: float = 0.0,
) -> Any:
    """A random ReplacementModel over the toy transformer.

    Args:
        tokenizer_dir: from ``build_tokenizer``.
        kind: cross-layer (``clt``) or per-layer (``plt``) transcoder.
        d_transcoder: features per layer.
        seed: for the model and transcoder weights.
        layer0_boost: added to the encoder bias of layer-0 features 0 and 1, which makes them
            active (and influential) everywhere: the circuit-tracer node-id collision case.
    """
    import torch
    from circuit_tracer import ReplacementModel
    from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder
    from circuit_tracer.transcoder.single_layer_transcoder import (
        SingleLayerTranscoder,
        TranscoderSet,
    )
    from transformer_lens import HookedTransformerConfig
    from transformers import AutoTokenizer

    vocab_size = len(AutoTokenizer.from_pretrained(str(tokenizer_dir)))
    cfg = HookedTransformerConfig(
        n_layers=N_LAYERS,
        d_model=D_MODEL,
        d_head=16,
        n_heads=4,
        d_mlp=4 * D_MODEL,
        n_ctx=64,
        d_vocab=vocab_size,
        act_fn="gelu",
        normalization_type="LN",
        tokenizer_name=str(tokenizer_dir),
        original_architecture="GPT2LMHeadModel",
        seed=seed,
    )
    torch.manual_seed(seed)
    cpu = torch.device("cpu")
    transcoders: Any
    with torch.no_grad():
        if kind == "clt":
            transcoders = CrossLayerTranscoder(
                n_layers=N_LAYERS,
                d_transcoder=d_transcoder,
                d_model=D_MODEL,
                lazy_decoder=False,
                dtype=torch.float32,
                device=cpu,
                scan="toy-clt",
            )
            transcoders.W_enc.normal_(0, 0.5)
            transcoders.b_enc.fill_(0.1)
            transcoders.b_enc[0, :2] += layer0_boost
            for w_dec in transcoders.W_dec:
                w_dec.normal_(0, 0.05)
        else:
            layers = {}
            for layer in range(N_LAYERS):
                plt = SingleLayerTranscoder(
                    D_MODEL, d_transcoder, torch.relu, layer, dtype=torch.float32, device=cpu
                )
                plt.W_enc.normal_(0, 0.5)
                plt.b_enc.fill_(0.1)
                if layer == 0:
                    plt.b_enc[:2] += layer0_boost
                plt.W_dec.normal_(0, 0.05)
                layers[layer] = plt
            transcoders = TranscoderSet(
                layers,
                feature_input_hook="hook_resid_mid",
                feature_output_hook="hook_mlp_out",
                scan="toy-plt",
            )
    return ReplacementModel.from_config(cfg, transcoders)


def attribute(model: Any, prompt: str) -> Any:
    """An attribution graph of ``prompt`` (small batch: CPU)."""
    from circuit_tracer import attribute as circuit_attribute

    return circuit_attribute(prompt, model, max_n_logits=5, batch_size=32)
