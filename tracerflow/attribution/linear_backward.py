"""The backward pass of circuit-tracer's local replacement model, written out as matrix products.

circuit-tracer 0.5.0 computes each block of attribution rows by injecting encoder vectors as
gradients and running autograd through a batch-expanded forward graph, with per-layer backward
hooks that gather ``[batch, n_decoder_vectors, d_model]`` copies of the gradient and contract them
with decoder vectors. On a CPU that costs a batch-sized forward pass (MLPs included, though their
outputs are detached), hundreds of MB of temporaries per hook, and gradients for every position
and layer whether or not they can be non-zero.

Under circuit-tracer's freezes (attention patterns and norm scales detached, MLP outputs detached,
parameters frozen) the model is linear in the residual stream, so the same rows follow from a
handful of products per layer, done here explicitly:

    g_post[L]  = grad at blocks.L.hook_mlp_out (= grad at resid_post L)
    g_mid[L]   = g_post[L] (+ g_post[L] @ M_skip[L]^T)     then the sources at layer L are injected
    g_pre[L]   = g_mid[L] + norm1^T( W_V^T pattern^T W_O^T g_mid[L] )
    g_post[L-1] = g_pre[L];  grad at hook_embed = g_pre[0]

Row entries are contractions of g_post[L] with decoder and error vectors, and of the embedding
gradient with the token vectors, exactly as circuit-tracer's hooks define them. Two facts remove
work autograd cannot see: a source at (layer l, position p) has zero gradient at every position
after p (causal attention) and at every layer from l up, so a block of sources sorted by
(layer, position) only touches positions <= its last source's position, from its top layer down.

``unsupported_reason`` lists what this reimplementation covers; anything else takes circuit-tracer's
own path.
"""

from __future__ import annotations

import torch
from circuit_tracer.attribution.context_transformerlens import AttributionContext
from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

NORMS = (LayerNorm, LayerNormPre, RMSNorm, RMSNormPre)
FLOAT_DTYPES = (torch.float32, torch.float64)


def unsupported_reason(model: object) -> str | None:
    """Why the explicit backward cannot stand in for this model's autograd, or None if it can."""
    from circuit_tracer.replacement_model.replacement_model_transformerlens import (
        TransformerLensReplacementModel,
    )

    if not isinstance(model, TransformerLensReplacementModel):
        return f"backend {getattr(model, 'backend', type(model).__name__)!r} (TransformerLens only)"
    cfg = model.cfg
    checks = {
        "attention-only model": cfg.attn_only,
        "parallel attention and MLP": cfg.parallel_attn_mlp,
        "non-causal attention": cfg.attention_dir != "causal",
        "split or per-head attention inputs": cfg.use_split_qkv_input or cfg.use_attn_in,
        "norms after attention/MLP": cfg.use_normalization_before_and_after,
        "grouped-query attention": cfg.n_key_value_heads not in (None, cfg.n_heads),
        "4-bit weights": cfg.load_in_4bit,
        f"positional embedding {cfg.positional_embedding_type!r}": (
            cfg.positional_embedding_type not in ("standard", "rotary")
        ),
        f"architecture {cfg.original_architecture!r}": str(cfg.original_architecture).startswith(
            "Olmo"
        ),
        f"dtype {cfg.dtype}": cfg.dtype not in FLOAT_DTYPES,
        f"feature input hook {model.feature_input_hook!r}": (
            model.feature_input_hook != "hook_resid_mid"
        ),
        f"feature output hook {model.original_feature_output_hook!r}": (
            model.original_feature_output_hook != "hook_mlp_out"
        ),
    }
    for block in model.blocks:
        checks[f"attention class {type(block.attn).__name__}"] = (
            type(block.attn).__name__ != "Attention"
        )
        checks[f"norm class {type(block.ln1).__name__}"] = not isinstance(block.ln1, NORMS)
    checks[f"final norm class {type(model.ln_final).__name__}"] = not isinstance(
        model.ln_final, NORMS
    )
    reasons = [name for name, failed in checks.items() if failed]
    return ", ".join(reasons) if reasons else None


def forward_cache_hooks(n_layers: int) -> tuple[dict[str, torch.Tensor], list[tuple[str, object]]]:
    """Forward hooks that keep what the frozen backward needs: attention patterns, norm scales.

    They ride along circuit-tracer's own (batch 1) precomputation forward pass, so no extra pass
    over the model is needed. Returns the dict they fill and the ``(hook name, fn)`` list.
    """
    cache: dict[str, torch.Tensor] = {}

    def keep(acts: torch.Tensor, hook: object) -> torch.Tensor:
        cache[hook.name] = acts.detach()  # type: ignore[attr-defined]
        return acts

    names = ["ln_final.hook_scale"]
    for layer in range(n_layers):
        names += [f"blocks.{layer}.ln1.hook_scale", f"blocks.{layer}.attn.hook_pattern"]
    return cache, [(name, keep) for name in names]


class _Norm:
    """The transpose of a norm whose scale is frozen: g -> center?(g * w / scale)."""

    def __init__(self, module: torch.nn.Module, scale: torch.Tensor) -> None:
        # scale: [1, n_pos, 1] from the precomputation pass (identical for every batch row).
        weight = getattr(module, "w", None) if isinstance(module, LayerNorm | RMSNorm) else None
        self.factor = (1.0 / scale[0]) if weight is None else (weight.detach() / scale[0])
        self.center = isinstance(module, LayerNorm | LayerNormPre)

    def transpose(self, grad: torch.Tensor) -> torch.Tensor:
        """grad [batch, pos, d_model] -> [batch, pos, d_model] (only the first pos rows used)."""
        out = grad * self.factor[: grad.shape[1]]
        if self.center:
            out = out - out.mean(-1, keepdim=True)
        return out


class LinearBackward:
    """Attribution rows of a prompt, by explicit products instead of autograd.

    Built once per prompt from circuit-tracer's ``AttributionContext`` (the active features, their
    encoder/decoder vectors, the error and token vectors) and the patterns and norm scales of the
    precomputation pass. ``rows`` is the drop-in equivalent of ``AttributionContext.compute_batch``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        ctx: AttributionContext,
        forward_cache: dict[str, torch.Tensor],
    ) -> None:
        n_layers, n_pos, _ = ctx.activation_matrix.shape
        self.n_layers = n_layers
        self.n_pos = n_pos
        self.n_features = ctx.activation_matrix._nnz()
        self.row_size = self.n_features + (n_layers + 1) * n_pos
        self.error_vectors = ctx.error_vectors  # [n_layers, n_pos, d_model]
        self.token_vectors = ctx.token_vectors  # [n_pos, d_model]
        d_model = ctx.token_vectors.shape[-1]
        self.d_model = d_model

        cfg = model.cfg  # type: ignore[attr-defined]
        blocks = model.blocks  # type: ignore[attr-defined]
        self.final_norm = _Norm(model.ln_final, forward_cache["ln_final.hook_scale"])  # type: ignore[arg-type]
        self.norms = [
            _Norm(block.ln1, forward_cache[f"blocks.{layer}.ln1.hook_scale"])
            for layer, block in enumerate(blocks)
        ]
        # pattern^T per layer: [n_heads, key_pos, query_pos], so that g_v = pattern^T @ g_z.
        self.patterns_t = [
            forward_cache[f"blocks.{layer}.attn.hook_pattern"][0].transpose(-1, -2).contiguous()
            for layer in range(n_layers)
        ]
        n_heads, d_head = cfg.n_heads, cfg.d_head
        # z_flat @ W_O_flat = attention output, x @ W_V_flat = v_flat (head-major columns).
        self.w_o_t = [
            block.attn.W_O.detach().reshape(n_heads * d_head, d_model).T.contiguous()
            for block in blocks
        ]  # [d_model, n_heads * d_head]
        self.w_v_t = [
            block.attn.W_V.detach()
            .permute(1, 0, 2)
            .reshape(d_model, n_heads * d_head)
            .T.contiguous()
            for block in blocks
        ]  # [n_heads * d_head, d_model]
        self.n_heads, self.d_head = n_heads, d_head
        self.skip_t = self._skip_transposes(model, n_layers, d_model)

        self._group_decoder_vectors(ctx)

    @staticmethod
    def _skip_transposes(
        model: torch.nn.Module, n_layers: int, d_model: int
    ) -> list[torch.Tensor | None]:
        """M^T per layer for transcoders with a skip connection ``skip = x @ M``, else None."""
        transcoders = model.transcoders  # type: ignore[attr-defined]
        if not transcoders.skip_connection:
            return [None] * n_layers
        ref = model.W_E  # type: ignore[attr-defined]
        eye = torch.eye(d_model, device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            return [
                transcoders.compute_skip(layer, eye).T.contiguous() for layer in range(n_layers)
            ]

    def _group_decoder_vectors(self, ctx: AttributionContext) -> None:
        """Sort each output layer's decoder vectors by position, once per prompt.

        Then the vectors a block of sources can see (positions < its extent) are a prefix, and
        each position's contraction is one GEMM with no gathered copy of the gradient.
        """
        nnz_layers, nnz_positions = ctx.decoder_locations
        self.dec_vectors: list[torch.Tensor] = []  # per layer [n_dec_L, d_model], by position
        self.dec_columns: list[torch.Tensor] = []  # per layer [n_dec_L]: feature row index
        self.dec_bounds: list[list[int]] = []  # per layer: start of each position, n_pos + 1
        for layer in range(self.n_layers):
            mask = nnz_layers == layer
            positions = nnz_positions[mask]
            order = torch.argsort(positions, stable=True)
            self.dec_vectors.append(ctx.decoder_vecs[mask][order].contiguous())
            self.dec_columns.append(ctx.encoder_to_decoder_map[mask][order].contiguous())
            counts = torch.bincount(positions, minlength=self.n_pos).cpu()
            bounds = [0, *torch.cumsum(counts, 0).tolist()]
            self.dec_bounds.append(bounds)

    def _attention_transpose(self, layer: int, grad: torch.Tensor) -> torch.Tensor:
        """grad at resid_mid [B, P, d] -> its share at resid_pre through frozen attention."""
        batch, n_pos, _ = grad.shape
        g_z = (grad @ self.w_o_t[layer]).view(batch, n_pos, self.n_heads, self.d_head)
        pattern_t = self.patterns_t[layer][:, :n_pos, :n_pos]  # [H, key, query]
        g_v = torch.matmul(pattern_t, g_z.transpose(1, 2))  # [B, H, key, d_head]
        g_v = g_v.transpose(1, 2).reshape(batch, n_pos, self.n_heads * self.d_head)
        return self.norms[layer].transpose(g_v @ self.w_v_t[layer])

    def _contract_output(self, layer: int, grad: torch.Tensor, buffer: torch.Tensor) -> None:
        """Add the rows' entries for nodes that write to blocks.{layer}.hook_mlp_out.

        grad [B, P', d] is the gradient there; buffer [row_size, B] as circuit-tracer's.
        """
        n_pos = grad.shape[1]
        bounds = self.dec_bounds[layer]
        n_dec = bounds[n_pos]
        if n_dec:
            vectors = self.dec_vectors[layer]
            partial = torch.empty(n_dec, grad.shape[0], dtype=buffer.dtype, device=buffer.device)
            for pos in range(n_pos):
                start, end = bounds[pos], bounds[pos + 1]
                if end > start:
                    torch.matmul(vectors[start:end], grad[:, pos].T, out=partial[start:end])
            buffer.index_add_(0, self.dec_columns[layer][:n_dec], partial)
        offset = self.n_features + layer * self.n_pos
        buffer[offset : offset + n_pos] += torch.einsum(
            "bpd,pd->pb", grad, self.error_vectors[layer, :n_pos]
        )

    def rows(
        self, layers: torch.Tensor, positions: torch.Tensor, inject_values: torch.Tensor
    ) -> torch.Tensor:
        """Attribution rows for sources at (layer, position) with the given injected vectors.

        Args:
            layers: [B] source layers; ``n_layers`` means the unembedding input (logit sources).
            positions: [B] source positions.
            inject_values: [B, d_model] encoder vectors (or demeaned unembedding vectors).

        Returns:
            [B, row_size] rows: feature nodes, then error nodes (layer-major), then token nodes.
        """
        batch = len(layers)
        device, dtype = inject_values.device, inject_values.dtype
        top = int(layers.max())
        extent = int(positions.max()) + 1  # no source sees a later position
        buffer = torch.zeros(self.row_size, batch, dtype=dtype, device=device)
        grad = torch.zeros(batch, extent, self.d_model, dtype=dtype, device=device)
        rows = torch.arange(batch, device=device)
        layers = layers.to(device)
        positions = positions.to(device)

        if top == self.n_layers:  # logit sources sit after the final norm
            mask = layers == top
            grad[rows[mask], positions[mask]] = inject_values[mask]
            grad = self.final_norm.transpose(grad)
            top -= 1
            self._contract_output(top, grad, buffer)
            grad = self._after_output(top, grad)
        for layer in range(top, -1, -1):
            if layer < top:  # at the top layer the gradient is still zero
                self._contract_output(layer, grad, buffer)
                grad = self._after_output(layer, grad)
            mask = layers == layer
            if bool(mask.any()):
                # circuit-tracer replaces the gradient there; it is zero for these rows anyway.
                grad[rows[mask], positions[mask]] = inject_values[mask]
            grad = grad + self._attention_transpose(layer, grad)
        token_offset = self.n_features + self.n_layers * self.n_pos
        buffer[token_offset : token_offset + extent] += torch.einsum(
            "bpd,pd->pb", grad, self.token_vectors[:extent]
        )
        return buffer.T

    def _after_output(self, layer: int, grad: torch.Tensor) -> torch.Tensor:
        """Gradient at resid_mid from the gradient at resid_post: the residual (+ skip)."""
        skip_t = self.skip_t[layer]
        return grad if skip_t is None else grad + grad @ skip_t
