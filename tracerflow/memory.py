"""A run's peak memory, estimated before it starts, from shapes alone (no torch, no weights).

Users of circuit-tracer meet an out-of-memory kill minutes into a run. tracerflow adds up what
the run will hold, stage by stage, from the model's and transcoder's shapes (their configs and
safetensors headers), the prompt's token count and the attribution parameters, and refuses a
run that cannot fit in one line that says what would (``flows.validation.check_memory``).

The formula, each term explained and checked against measured peaks at three sizes:
docs/performance.md, "Memory before the run" (``benchmarks/memory_estimate.py``). In short, the
peak is the largest of the run's stages, each the sum of what it holds at once::

    baseline + transcoders + max(c x model (loading it), model + max(precompute,
        backward setup, features, package, score))

The estimate is of the CPU path tracerflow takes by default (its fast attribution, then its
score stage); what it leaves out is listed in the docs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

# RSS of a process that has imported what a scoring run imports (Prefect, torch,
# transformer-lens, circuit-tracer, tracerflow's flows) before it loads anything: measured by
# ``benchmarks/memory_estimate.py --baseline`` on this project's machine (Linux, x86-64,
# torch 2.13 CPU). Other builds differ by some tens of MB.
BASELINE_BYTES = 512 * 2**20
# Attribution rows, graphs and score buffers are float32 whatever the model's dtype.
GRAPH_BYTES = 4
# Active features per layer and token assumed for activations with no k (ReLU, JumpReLU): how many
# fire depends on the prompt, which only running the encoder tells. The published JumpReLU sets
# run at L0 of ~10-150; this is an assumption, said as such in the docs.
ASSUMED_ACTIVE_PER_TOKEN = 64
# The score stage holds the graph's adjacency (loaded), one working copy of it and a bool mask
# of the same shape (tracerflow/scoring.py): 2.25 adjacencies.
SCORE_ADJACENCIES = 2.25
# Copies of the weights held at once while a model loads: a Hub model through TransformerLens
# holds the Hugging Face model, its converted state dict and the HookedTransformer; the toy (a
# config and a safetensors file) its file's tensors and the model. Measured: docs/performance.md.
HUB_LOAD_COPIES = 3
FILE_LOAD_COPIES = 2
# Rows per explicit backward block (tracerflow.attribution's default on a CPU).
CPU_BLOCK_ROWS = 32

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
GIB = 2**30


@dataclass(frozen=True)
class ModelShape:
    """What a model's memory depends on. ``n_positions`` is the rows of a learned positional
    embedding (0 for rotary models); ``gated_mlp`` for MLPs with three matrices (Llama, Gemma,
    Qwen)."""

    n_layers: int
    d_model: int
    n_heads: int
    d_head: int
    d_mlp: int
    d_vocab: int
    n_positions: int = 0
    n_kv_heads: int | None = None
    gated_mlp: bool = False
    load_copies: int = HUB_LOAD_COPIES  # copies of the weights held at once while it loads

    @property
    def attention_params(self) -> int:
        kv_heads = self.n_kv_heads or self.n_heads
        return self.n_layers * 2 * self.d_model * self.d_head * (self.n_heads + kv_heads)

    @property
    def mlp_params(self) -> int:
        return self.n_layers * (3 if self.gated_mlp else 2) * self.d_model * self.d_mlp

    @property
    def embedding_params(self) -> int:
        """Token and positional embeddings and the unembedding (TransformerLens keeps its own
        unembedding even where the Hub model ties it)."""
        return (2 * self.d_vocab + self.n_positions) * self.d_model

    @property
    def n_params(self) -> int:
        """Weights, biases and norms left out (under 1 % of a transformer's)."""
        return self.attention_params + self.mlp_params + self.embedding_params


@dataclass(frozen=True)
class TranscoderShape:
    """What a transcoder's memory depends on: kind, shape, its TopK ``k`` (None: no k) and
    whether PLT layers carry a skip matrix."""

    kind: Literal["clt", "plt"]
    n_layers: int
    d_model: int
    d_features: int
    k: int | None = None
    skip: bool = False

    @property
    def resident_params(self) -> int:
        """What a loaded transcoder holds in memory. A CLT's decoder stays on disk
        (circuit-tracer's lazy decoder: only active features' rows are read), its encoder is
        held; a PLT holds both, and its skip matrices."""
        per_layer = self.d_features * self.d_model
        if self.kind == "clt":
            return self.n_layers * per_layer
        skip = self.d_model * self.d_model if self.skip else 0
        return self.n_layers * (2 * per_layer + skip)

    @property
    def active_per_token(self) -> int:
        """Active features per layer and token: k for TopK, else the assumption above."""
        return min(self.k or ASSUMED_ACTIVE_PER_TOKEN, self.d_features)


@dataclass(frozen=True)
class MemoryEstimate:
    """A run's estimated peak: ``stages`` in bytes (the largest is the peak), the terms of
    each, and the counts they were derived from."""

    stages: dict[str, dict[str, int]]
    n_tokens: int
    n_active: int
    n_feature_nodes: int
    n_nodes: int
    offload: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def stage_totals(self) -> dict[str, int]:
        return {name: sum(terms.values()) for name, terms in self.stages.items()}

    @property
    def peak_stage(self) -> str:
        totals = self.stage_totals
        return max(totals, key=lambda name: totals[name])

    @property
    def total_bytes(self) -> int:
        return max(self.stage_totals.values())


def estimate_memory(
    model: ModelShape,
    transcoder: TranscoderShape,
    *,
    n_tokens: int,
    max_feature_nodes: int | None,
    max_n_logits: int,
    batch_size: int,
    offload: str | None = None,
    dtype: str = "float32",
    baseline_bytes: int = BASELINE_BYTES,
) -> MemoryEstimate:
    """The peak resident memory of a CPU run of one prompt of ``n_tokens`` tokens (BOS
    included), stage by stage. Every term: docs/performance.md, "Memory before the run".

    Counts: ``a`` active features per layer and token (TopK: k), ``A = L (P - 1) a`` active
    features (position 0, BOS, is zeroed), ``N = min(max_feature_nodes, A)`` feature rows,
    ``G = max_n_logits`` logit rows (an upper bound), ``n_nodes = A + (L + 1) P + G`` columns.
    """
    f = DTYPE_BYTES[dtype]
    g = GRAPH_BYTES
    n_layers, d_model, n_pos = model.n_layers, model.d_model, n_tokens
    a = transcoder.active_per_token
    n_active = max(n_layers * (n_pos - 1) * a, 1)
    n_features = min(max_feature_nodes or n_active, n_active)
    n_logits = max_n_logits
    non_feature_nodes = (n_layers + 1) * n_pos + n_logits
    n_nodes = n_active + non_feature_nodes
    binds = n_features < n_active

    weights = {
        "baseline": baseline_bytes,
        "model weights": model.n_params * f,
        "transcoder weights": transcoder.resident_params * f,
    }
    # Offloading to disk frees the transcoders, the MLPs and the (un)embeddings while the rows
    # are computed (they are back for the score stage); on a CPU, offloading to "cpu" frees
    # nothing.
    during_rows = dict(weights)
    if offload == "disk":
        during_rows["model weights"] -= (model.mlp_params + model.embedding_params) * f
        during_rows["transcoder weights"] = 0

    # Decoder vectors: each active feature's decoder row(s), scaled by its activation. A CLT
    # feature of layer l writes to the L - l layers from l on: (L + 1) / 2 on average.
    writes_per_feature = (n_layers + 1) / 2 if transcoder.kind == "clt" else 1
    decoder_vectors = int(n_active * writes_per_feature * d_model * f)
    encoder_vectors = n_active * d_model * f
    # The explicit backward packs the decoder vectors by output layer and position, with each
    # position's error vector, zero-padded to the busiest position: about the vectors once more.
    slots = decoder_vectors + n_layers * n_pos * d_model * f
    token_kernel = n_pos * n_pos * d_model * f
    backward_weights = (
        2 * n_layers * d_model * model.n_heads * model.d_head * f  # W_O, W_V copies
        + n_layers * model.n_heads * n_pos * n_pos * f  # transposed attention patterns
        + (token_kernel if token_kernel <= 64 * 2**20 else 0)
    )
    # One block of rows: the row buffer, the gradient and its per-layer temporaries, the
    # per-slot products.
    row_size = n_active + n_layers * n_pos + n_pos
    writers = a * (n_layers if transcoder.kind == "clt" else 1) + 1
    block = CPU_BLOCK_ROWS * f * (2 * row_size + 4 * n_pos * d_model + 2 * n_pos * writers)
    # The forward pass circuit-tracer's precomputation runs (batch 1): logits and the cached
    # MLP inputs and outputs.
    precompute = n_pos * model.d_vocab * f + 4 * n_layers * n_pos * d_model * f

    # The attribution rows: with every active feature kept, the square adjacency itself;
    # otherwise feature and logit rows in visiting order, a copy of them each time features are
    # re-ranked (circuit-tracer's compute_partial_influences), then the square graph.
    final_nodes = n_features + non_feature_nodes
    adjacency = final_nodes * final_nodes * g
    if binds:
        rows = (n_features + n_logits) * n_nodes * g
        queue = 4 * batch_size
        last_rerank_rows = n_logits + queue * ((n_features - 1) // queue)
        rerank_copy = last_rerank_rows * n_nodes * g
    else:
        rows = n_nodes * n_nodes * g
        rerank_copy = 0

    attribution_base = {
        **during_rows,
        "packed decoder vectors": slots,
        "encoder vectors": encoder_vectors,
        "backward weights": backward_weights,
    }
    stages = {
        "model load": {
            **weights,
            "model weights": model.load_copies * weights["model weights"],
        },
        "precompute": {
            **weights,
            "forward pass": precompute,
            "decoder vectors": decoder_vectors,
            "encoder vectors": encoder_vectors,
        },
        "backward setup": {
            **weights,
            "decoder vectors": decoder_vectors,
            "packed decoder vectors": slots,
            "encoder vectors": encoder_vectors,
            "backward weights": backward_weights,
        },
        "features": {
            **attribution_base,
            "attribution rows": rows,
            "re-ranking copy": rerank_copy,
            "row block": block,
        },
        "score": {**weights, "adjacency x 2.25": int(SCORE_ADJACENCIES * adjacency)},
    }
    if binds:
        stages["package"] = {**attribution_base, "attribution rows": rows, "adjacency": adjacency}
    notes = []
    if transcoder.k is None:
        notes.append(f"assumes {a} active features per layer and token (no TopK k)")
    return MemoryEstimate(
        stages=stages,
        n_tokens=n_tokens,
        n_active=n_active,
        n_feature_nodes=n_features,
        n_nodes=final_nodes,
        offload=offload,
        notes=notes,
    )


def largest_fitting_feature_nodes(
    available_bytes: int,
    model: ModelShape,
    transcoder: TranscoderShape,
    *,
    n_tokens: int,
    max_n_logits: int,
    batch_size: int,
    offload: str | None = None,
    dtype: str = "float32",
    baseline_bytes: int = BASELINE_BYTES,
) -> int | None:
    """The largest ``max_feature_nodes`` whose estimate (same other options) fits in
    ``available_bytes``, rounded down to a multiple of 64 from 64 on; None when even one
    feature node does not fit."""

    def estimate(max_feature_nodes: int | None) -> MemoryEstimate:
        return estimate_memory(
            model,
            transcoder,
            n_tokens=n_tokens,
            max_feature_nodes=max_feature_nodes,
            max_n_logits=max_n_logits,
            batch_size=batch_size,
            offload=offload,
            dtype=dtype,
            baseline_bytes=baseline_bytes,
        )

    def fits(n: int) -> bool:
        return estimate(n).total_bytes <= available_bytes

    if not fits(1):
        return None
    low, high = 1, estimate(None).n_active
    while low < high:  # bisect for the last that fits (the estimate grows with the nodes)
        middle = (low + high + 1) // 2
        low, high = (middle, high) if fits(middle) else (low, middle - 1)
    return low - low % 64 if low >= 64 else low


def size_text(n_bytes: int) -> str:
    """``12.4 GiB``, ``350 MiB``: how the refusal and ``tracerflow presets`` say a size."""
    if n_bytes >= GIB:
        return f"{n_bytes / GIB:.1f} GiB"
    return f"{max(round(n_bytes / 2**20), 1)} MiB"


_UNITS = {"": 1, "b": 1, "k": 1000, "m": 1000**2, "g": 1000**3, "t": 1000**4}
_UNITS |= {"kb": 1000, "mb": 1000**2, "gb": 1000**3, "tb": 1000**4}
_UNITS |= {"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_CGROUP = Path("/sys/fs/cgroup")


def parse_memory_limit(text: str) -> int | None:
    """``$TRACERFLOW_MEMORY_LIMIT`` in bytes: ``8GiB``, ``12G``, ``500MB``, ``8000000000``;
    None for ``off``. ``ValueError`` naming what it takes otherwise."""
    value = text.strip().lower().replace(" ", "")
    if value in ("off", "none", "0"):
        return None
    number = value.rstrip("kmgtib")
    unit = value[len(number) :]
    try:
        amount = float(number)
    except ValueError:
        amount = -1.0
    if unit not in _UNITS or not amount > 0:
        raise ValueError(
            "TRACERFLOW_MEMORY_LIMIT must be a size such as 8GiB, 12G or 500MB, or off; "
            f"got {text!r}"
        )
    return int(amount * _UNITS[unit])


def available_memory_bytes() -> int:
    """Memory a new allocation can get now without swapping: the kernel's estimate
    (psutil's ``available``), within the cgroup's (a container's) limit where it sets one."""
    import psutil

    available = int(psutil.virtual_memory().available)
    try:
        limit = (_CGROUP / "memory.max").read_text().strip()
        used = int((_CGROUP / "memory.current").read_text())
    except (OSError, ValueError):
        return available
    return available if limit == "max" else min(available, max(int(limit) - used, 0))


def cuda_free_bytes(device: str) -> int:
    """Free memory of the CUDA ``device`` now (``torch.cuda.mem_get_info``)."""
    import torch

    free, _ = torch.cuda.mem_get_info(torch.device(device))
    return int(free)
