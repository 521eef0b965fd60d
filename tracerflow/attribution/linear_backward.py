"""The backward pass of circuit-tracer's local replacement model, written out as matrix products.

Under circuit-tracer's freezes (attention patterns, norm scales and MLP outputs detached) the model
is linear in the residual stream, so a block of attribution rows is a handful of GEMMs per layer
instead of a batch-sized forward pass, autograd and gathering hooks. The equations and what they
skip: docs/performance.md. ``unsupported_reason`` lists what this covers; anything else takes
circuit-tracer's own path.
"""

from __future__ import annotations

import torch
from circuit_tracer.attribution.context_transformerlens import AttributionContext
from transformer_lens.components import LayerNorm, LayerNormPre, RMSNorm, RMSNormPre

NORMS = (LayerNorm, LayerNormPre, RMSNorm, RMSNormPre)
FLOAT_DTYPES = (torch.float32, torch.float64)
# Where features may read: the residual stream before the MLP, or the MLP's normalised input
# (the published Gemma, Llama and Qwen3 PLTs). circuit-tracer injects an encoder vector's
# gradient there; through the frozen ln2 that is ``center?(g) / scale[pos]`` at resid_mid.
RESID_INPUT_HOOK = "hook_resid_mid"
NORMALIZED_INPUT_HOOK = "ln2.hook_normalized"


def reads_normalized_input(model: object) -> bool:
    """Whether the model's transcoders read the MLP's normalised input (``ln2.hook_normalized``)."""
    return getattr(model, "feature_input_hook", None) == NORMALIZED_INPUT_HOOK


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
        "4-bit weights": cfg.load_in_4bit,
        f"positional embedding {cfg.positional_embedding_type!r}": (
            cfg.positional_embedding_type not in ("standard", "rotary")
        ),
        f"architecture {cfg.original_architecture!r}": str(cfg.original_architecture).startswith(
            "Olmo"
        ),
        f"dtype {cfg.dtype}": cfg.dtype not in FLOAT_DTYPES,
        f"feature input hook {model.feature_input_hook!r}": (
            model.feature_input_hook not in (RESID_INPUT_HOOK, NORMALIZED_INPUT_HOOK)
        ),
        "a skip connection read at the normalised MLP input": (
            reads_normalized_input(model) and bool(model.skip_transcoder)
        ),
        f"feature output hook {model.original_feature_output_hook!r}": (
            model.original_feature_output_hook != "hook_mlp_out"
        ),
    }
    for block in model.blocks:
        # Grouped key/value heads: ``W_V`` reads as every query head's copy of its group's, and
        # the pattern is per query head, so the frozen backward is multi-head attention's.
        checks[f"attention class {type(block.attn).__name__}"] = type(block.attn).__name__ not in (
            "Attention",
            "GroupedQueryAttention",
        )
        checks[f"norm class {type(block.ln1).__name__}"] = not isinstance(block.ln1, NORMS)
        if reads_normalized_input(model):
            ln2 = getattr(block, "ln2", None)
            checks[f"MLP-input norm class {type(ln2).__name__}"] = not isinstance(ln2, NORMS)
    checks[f"final norm class {type(model.ln_final).__name__}"] = not isinstance(
        model.ln_final, NORMS
    )
    reasons = [name for name, failed in checks.items() if failed]
    return ", ".join(reasons) if reasons else None


def forward_cache_hooks(
    n_layers: int, normalized_input: bool = False
) -> tuple[dict[str, torch.Tensor], list[tuple[str, object]]]:
    """Forward hooks that keep what the frozen backward needs: attention patterns, norm scales
    (ln2's too where features read the normalised MLP input, ``normalized_input``).

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
        if normalized_input:
            names.append(f"blocks.{layer}.ln2.hook_scale")
    return cache, [(name, keep) for name in names]


def _norm_weight(module: torch.nn.Module) -> torch.Tensor | None:
    return module.w.detach() if isinstance(module, LayerNorm | RMSNorm) else None


def _centers(module: torch.nn.Module) -> bool:
    return isinstance(module, LayerNorm | LayerNormPre)


class LinearBackward:
    """Attribution rows of a prompt, by explicit products instead of autograd.

    Built once per prompt from circuit-tracer's ``AttributionContext`` (the active features, their
    encoder/decoder vectors, the error and token vectors) and the patterns and norm scales of the
    precomputation pass. ``rows`` is the drop-in equivalent of ``AttributionContext.compute_batch``.

    Gradients are kept position-major, ``[pos, batch, d_model]``: every product is then one large
    GEMM or one batched GEMM over heads or positions, with no per-row or per-position kernels.
    Small kernels matter on CPUs shared with other work, where each parallel region waits for
    its slowest thread.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        ctx: AttributionContext,
        forward_cache: dict[str, torch.Tensor],
    ) -> None:
        n_layers, n_pos, _ = ctx.activation_matrix.shape
        self.n_layers, self.n_pos = n_layers, n_pos
        self.n_features = ctx.activation_matrix._nnz()
        self.row_size = self.n_features + (n_layers + 1) * n_pos
        self.token_vectors = ctx.token_vectors  # [n_pos, d_model]
        self.d_model = d_model = ctx.token_vectors.shape[-1]
        cfg = model.cfg  # type: ignore[attr-defined]
        self.n_heads, self.d_head = cfg.n_heads, cfg.d_head

        # Final norm (logit sources only): g -> center?(g * w / scale), factor [n_pos, d_model].
        scale = forward_cache["ln_final.hook_scale"][0]  # [n_pos, 1]
        weight = _norm_weight(model.ln_final)  # type: ignore[arg-type]
        self.final_factor = 1.0 / scale if weight is None else weight / scale
        self.final_centers = _centers(model.ln_final)  # type: ignore[arg-type]

        self.w_o_heads: list[torch.Tensor] = []  # [H, d_model, d_head]: g_z[h] = g @ W_O[h]^T
        self.patterns_t: list[torch.Tensor] = []  # [H, key, query] / ln1 scale[key]
        self.w_v_eff: list[torch.Tensor] = []  # [H * d_head, d_model], norm weight & centering in
        for layer, block in enumerate(model.blocks):  # type: ignore[attr-defined]
            attn = block.attn
            self.w_o_heads.append(attn.W_O.detach().transpose(1, 2).contiguous())
            # The frozen ln1 is x -> center?(x) / scale[pos] * w: its transpose is
            # g -> center?(g * w) / scale[pos]. The 1/scale is per key position, so it folds
            # into the transposed pattern's rows; w and the centering projection fold into W_V.
            ln1_scale = forward_cache[f"blocks.{layer}.ln1.hook_scale"][0]  # [n_pos, 1]
            pattern = forward_cache[f"blocks.{layer}.attn.hook_pattern"][0]  # [H, query, key]
            self.patterns_t.append((pattern.transpose(1, 2) / ln1_scale).contiguous())
            w_v_t = attn.W_V.detach().permute(0, 2, 1).reshape(self.n_heads * self.d_head, d_model)
            ln1_weight = _norm_weight(block.ln1)
            if ln1_weight is not None:
                w_v_t = w_v_t * ln1_weight
            if _centers(block.ln1):
                w_v_t = w_v_t - w_v_t.mean(dim=1, keepdim=True)
            self.w_v_eff.append(w_v_t.contiguous())
        # Features read at ln2.hook_normalized: an injected g becomes center?(g) / scale[pos] at
        # resid_mid (ln2's scale is frozen; its weight comes after the hook).
        self.input_scales: list[torch.Tensor] | None = None  # per layer [n_pos, 1]
        self.input_centers: list[bool] = []
        if reads_normalized_input(model):
            blocks = model.blocks  # type: ignore[attr-defined]
            self.input_scales = [
                forward_cache[f"blocks.{layer}.ln2.hook_scale"][0] for layer in range(n_layers)
            ]
            self.input_centers = [_centers(block.ln2) for block in blocks]
        self.skip_t = self._skip_transposes(model, n_layers, d_model)
        self._pack_output_vectors(ctx)
        self.token_kernel = self._token_kernel(model, forward_cache)

    def _token_kernel(
        self, model: torch.nn.Module, forward_cache: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Token rows straight from the gradient at resid_mid 0: ``K [pos', pos, d_model]``.

        Below layer 0's attention only the token nodes read the gradient, and each reads one
        number: ``t[p'] . g_embed[p']`` with ``g_embed = g + A^T g`` (A: layer 0's frozen
        attention branch). That is ``<t[p'] e_p' + A (t[p'] e_p'), g>``, so one small GEMM with
        the precomputed ``K[p'] = t[p'] e_p' + A (t[p'] e_p')`` replaces layer 0's attention
        backward for every row (1/(l+1) of the work of a layer-l source). Skipped for prompts
        so long that K (pos^2 x d_model) would be large.
        """
        n_pos, d_model = self.n_pos, self.d_model
        tokens = self.token_vectors
        if n_pos * n_pos * d_model * tokens.element_size() > 64 * 2**20:
            return None
        block = model.blocks[0]  # type: ignore[attr-defined]
        attn = block.attn
        # The frozen ln1 forward at each token's own position: center?(x) / scale[p] * w.
        normed = tokens - tokens.mean(-1, keepdim=True) if _centers(block.ln1) else tokens
        normed = normed / forward_cache["blocks.0.ln1.hook_scale"][0]
        ln1_weight = _norm_weight(block.ln1)
        if ln1_weight is not None:
            normed = normed * ln1_weight
        values = torch.einsum("pd,hde->phe", normed, attn.W_V.detach())
        outputs = torch.einsum("phe,hed->phd", values, attn.W_O.detach())  # [pos', H, d]
        pattern = forward_cache["blocks.0.attn.hook_pattern"][0]  # [H, query, key]
        kernel = torch.einsum("hqp,phd->pqd", pattern, outputs)
        kernel[torch.arange(n_pos), torch.arange(n_pos)] += tokens
        return kernel.contiguous()

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

    def _pack_output_vectors(self, ctx: AttributionContext) -> None:
        """Lay out, per output layer, every vector whose node writes there, by position.

        ``slots[L]`` is ``[n_pos, n_slots, d_model]``: at each position the layer's error vector in
        slot 0, then the decoder vectors (feature activation times decoder row) of the features
        writing to that layer at that position, zero-padded. One batched GEMM against the
        gradient ``[pos, d_model, batch]`` then gives every entry that layer contributes;
        ``gather[L]`` picks them out in row order: the layer's feature rows (``columns[L]``) and
        then its error rows.
        """
        nnz_layers, nnz_positions = ctx.decoder_locations
        n_pos, d_model = self.n_pos, self.d_model
        self.slots: list[torch.Tensor] = []
        self.gather: list[torch.Tensor] = []
        self.feature_rows: list[tuple[int, int] | torch.Tensor] = []
        for layer in range(self.n_layers):
            mask = nnz_layers == layer
            positions = nnz_positions[mask]
            columns = ctx.encoder_to_decoder_map[mask]
            vectors = ctx.decoder_vecs[mask]
            counts = torch.bincount(positions, minlength=n_pos)
            n_slots = int(counts.max()) + 1 if len(positions) else 1
            # Slot of each decoder vector within its position: its rank among that position's.
            order = torch.argsort(positions, stable=True)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.empty_like(positions)
            rank[order] = (
                torch.arange(len(positions), device=positions.device) - starts[positions[order]]
            )
            slots = torch.zeros(n_pos, n_slots, d_model, dtype=vectors.dtype, device=vectors.device)
            slots[:, 0] = ctx.error_vectors[layer]
            slots[positions, rank + 1] = vectors
            flat_slot = positions * n_slots + rank + 1
            by_column = torch.argsort(columns)
            sorted_columns = columns[by_column]
            error_slots = torch.arange(n_pos, device=positions.device) * n_slots
            self.slots.append(slots)
            self.gather.append(torch.cat([flat_slot[by_column], error_slots]))
            first = int(sorted_columns[0]) if len(columns) else 0
            contiguous = len(columns) == 0 or int(sorted_columns[-1]) - first + 1 == len(columns)
            # CLT: layer L's writers are all features of layers <= L, PLT: those of layer L; both
            # a contiguous range of rows, which makes the write a plain slice add.
            self.feature_rows.append(
                (first, first + len(columns)) if contiguous else sorted_columns
            )

    def _contract_output(self, layer: int, grad: torch.Tensor, buffer: torch.Tensor) -> None:
        """Add the entries of every node writing to ``blocks.{layer}.hook_mlp_out``.

        grad ``[P', B, d]`` is the gradient there (positions >= P' are zero); buffer
        ``[row_size, B]``.
        """
        extent, batch, _ = grad.shape
        slots = self.slots[layer]
        n_slots = slots.shape[1]
        products = torch.empty(self.n_pos * n_slots, batch, dtype=grad.dtype, device=grad.device)
        torch.bmm(
            slots[:extent],
            grad.transpose(1, 2),
            out=products[: extent * n_slots].view(extent, n_slots, batch),
        )
        products[extent * n_slots :] = 0
        entries = products.index_select(0, self.gather[layer])
        rows = self.feature_rows[layer]
        n_feature_rows = len(entries) - self.n_pos
        if isinstance(rows, tuple):
            buffer[rows[0] : rows[1]] += entries[:n_feature_rows]
        else:
            buffer.index_add_(0, rows, entries[:n_feature_rows])
        error_row = self.n_features + layer * self.n_pos
        buffer[error_row : error_row + self.n_pos] += entries[n_feature_rows:]

    def _attention_transpose_add(self, layer: int, grad: torch.Tensor) -> None:
        """grad at resid_mid ``[P', B, d]`` += its path back through frozen attention and ln1,
        giving the gradient at resid_pre (in place)."""
        extent, batch, d_model = grad.shape
        flat = grad.view(extent * batch, d_model)
        g_z = torch.matmul(flat, self.w_o_heads[layer])  # [H, P' * B, d_head]
        pattern_t = self.patterns_t[layer][:, :extent, :extent]  # causal: keys < P' suffice
        g_v = torch.bmm(pattern_t, g_z.view(self.n_heads, extent, batch * self.d_head))
        g_v = g_v.view(self.n_heads, extent * batch, self.d_head).transpose(0, 1)
        flat.addmm_(g_v.reshape(extent * batch, self.n_heads * self.d_head), self.w_v_eff[layer])

    def _single_position_attention_transpose_add(
        self, layer: int, grad: torch.Tensor, nonzero: torch.Tensor
    ) -> None:
        """``_attention_transpose_add`` where each row's gradient is non-zero at one query
        position only: ``nonzero`` indexes those entries in the flattened ``[P' * B]``, at most
        one per row (a block's top layer: just the injected sources).

        Through W_O and W_V such a row is one vector per head, which the transposed pattern only
        scales per key position: so W_V runs on one vector per row and head, not on every
        position's (it was a whole ``[P' * B, d] x [d, d]`` GEMM, 1/(2l - 1) of a layer-l
        block's work), and the pattern enters as a ``[P', H] x [H, d]`` product per row.
        """
        batch, d_model = grad.shape[1], grad.shape[2]
        positions, rows = nonzero // batch, nonzero % batch
        g_z = torch.matmul(grad.view(-1, d_model)[nonzero], self.w_o_heads[layer])  # [H, n, d_h]
        per_head = torch.bmm(g_z, self.w_v_eff[layer].view(self.n_heads, self.d_head, d_model))
        # coefficients [n, P', H]: pattern_t[h, key, position of row i]
        coefficients = self.patterns_t[layer][:, : grad.shape[0]].index_select(2, positions)
        spread = torch.bmm(coefficients.permute(2, 1, 0), per_head.transpose(0, 1))  # [n, P', d]
        grad[:, rows] += spread.transpose(0, 1)

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
        layers, positions = layers.to(device), positions.to(device)
        top = int(layers.max())
        extent = int(positions.max()) + 1  # causal: no source sees a later position
        buffer = torch.zeros(self.row_size, batch, dtype=dtype, device=device)
        grad = torch.zeros(extent, batch, self.d_model, dtype=dtype, device=device)
        rows = torch.arange(batch, device=device)

        if top == self.n_layers:  # logit sources sit after the final norm
            mask = layers == top
            grad[positions[mask], rows[mask]] = inject_values[mask]
            grad = grad * self.final_factor[:extent, None, :]
            if self.final_centers:
                grad -= grad.mean(-1, keepdim=True)
            top -= 1
            self._contract_output(top, grad, buffer)
            grad = self._residual_to_mid(top, grad)
            # Non-zero only at the last position, where the logits read.
            nonzero = (extent - 1) * batch + rows
        else:
            mask = layers == top
            nonzero = positions[mask] * batch + rows[mask]
        for layer in range(top, -1, -1):
            if layer < top:  # at a block's top layer the gradient is still zero
                self._contract_output(layer, grad, buffer)
                grad = self._residual_to_mid(layer, grad)
            mask = layers == layer
            if bool(mask.any()):
                # circuit-tracer replaces the gradient there; it is zero for these rows anyway.
                grad[positions[mask], rows[mask]] = self._at_resid_mid(
                    layer, positions[mask], inject_values[mask]
                )
            if layer == 0 and self.token_kernel is not None:
                break  # the token kernel stands in for layer 0's attention
            if layer == top:
                self._single_position_attention_transpose_add(layer, grad, nonzero)
            else:
                self._attention_transpose_add(layer, grad)
        token_row = self.n_features + self.n_layers * self.n_pos
        if self.token_kernel is not None:  # grad is at resid_mid 0
            kernel = self.token_kernel[:extent, :extent].reshape(extent, extent * self.d_model)
            columns = grad.permute(0, 2, 1).reshape(extent * self.d_model, batch)
            buffer[token_row : token_row + extent] += kernel @ columns
        else:  # grad is at hook_embed
            tokens = torch.bmm(self.token_vectors[:extent, None, :], grad.transpose(1, 2))
            buffer[token_row : token_row + extent] += tokens.view(extent, batch)
        return buffer.T

    def _at_resid_mid(
        self, layer: int, positions: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """Encoder vectors ``[n, d_model]`` injected at the feature input hook, as gradients at
        resid_mid: themselves, or through the frozen ln2 for ``ln2.hook_normalized``."""
        if self.input_scales is None:
            return values
        values = values / self.input_scales[layer][positions]
        if self.input_centers[layer]:
            values = values - values.mean(-1, keepdim=True)
        return values

    def _residual_to_mid(self, layer: int, grad: torch.Tensor) -> torch.Tensor:
        """Gradient at resid_mid from the gradient at resid_post: the residual (+ skip)."""
        skip_t = self.skip_t[layer]
        return grad if skip_t is None else grad + grad @ skip_t
