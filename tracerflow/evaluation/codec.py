"""Encode and decode one layer at a time through circuit-tracer's own transcoder objects.

Encoding goes through ``encode_layer`` (hence the exact activation tracerflow installs, e.g.
``PerLayerTopK``). Decoding reads only the decoder rows of features active in the batch
(circuit-tracer's ``_get_decoder_vectors``, which reads lazily from disk for a CLT) and contracts
them with a sparse matrix product: a GPT-2 CLT has 16 000 features a layer but ~16 active per
token. circuit-tracer's own ``decode`` is not used: it sizes its output by the last position with
an active feature and fails when none is active.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:  # imported where used: circuit-tracer takes seconds to import
    from tracerflow.transcoders import Transcoder


class LayerCodec:
    """Per-layer encode/decode of a CLT or PLT (``TranscoderSet``), results in fp32."""

    def __init__(self, transcoders: Transcoder) -> None:
        from circuit_tracer.transcoder.cross_layer_transcoder import CrossLayerTranscoder

        self.transcoders = transcoders
        self.is_clt = isinstance(transcoders, CrossLayerTranscoder)
        self.n_layers = int(transcoders.n_layers)
        self.d_features = int(transcoders.d_transcoder)
        self.has_skip = bool(transcoders.skip_connection)
        biases = (
            transcoders.b_dec  # type: ignore[union-attr]
            if self.is_clt
            else torch.stack([t.b_dec for t in transcoders])  # type: ignore[union-attr]
        )
        self.decoder_bias = biases.detach().float()  # [n_layers, d_model]
        self.d_model = int(self.decoder_bias.shape[1])

    @property
    def kind(self) -> str:
        return "clt" if self.is_clt else "plt"

    def encode(self, layer: int, inputs: torch.Tensor) -> torch.Tensor:
        """Features ``[n_tokens, d_features]`` (fp32) of ``inputs [n_tokens, d_model]``."""
        return self.transcoders.encode_layer(inputs, layer).float()

    def decode_into(self, layer: int, features: torch.Tensor, outputs: torch.Tensor) -> None:
        """Add the contributions of layer ``layer``'s ``features [n_tokens, d_features]`` to
        ``outputs [n_layers, n_tokens, d_model]`` (fp32): to every later layer for a CLT, to
        ``layer`` alone for a PLT. Biases and skip connections are not added here."""
        token_ids, feature_ids = features.nonzero(as_tuple=True)
        if token_ids.numel() == 0:
            return
        unique_ids, columns = feature_ids.unique(return_inverse=True)
        vectors = self._decoder_rows(layer, unique_ids).float()  # [U, n_targets, d_model]
        n_tokens, (n_unique, n_targets, d_model) = features.shape[0], vectors.shape
        activations = torch.sparse_coo_tensor(
            torch.stack([token_ids, columns]),
            features[token_ids, feature_ids],
            (n_tokens, n_unique),
            check_invariants=False,  # built from nonzero(): unique, in-range indices
        )
        contributions = torch.sparse.mm(activations, vectors.reshape(n_unique, -1))
        outputs[layer : layer + n_targets] += contributions.reshape(
            n_tokens, n_targets, d_model
        ).transpose(0, 1)

    def finish(self, layer: int, decoded: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        """Layer ``layer``'s reconstruction: its decoded sum plus bias and skip connection."""
        reconstruction = decoded + self.decoder_bias[layer]
        if self.has_skip:
            reconstruction = reconstruction + self.transcoders.compute_skip(layer, inputs).float()
        return reconstruction

    def _decoder_rows(self, layer: int, feature_ids: torch.Tensor) -> torch.Tensor:
        if self.is_clt:
            return self.transcoders._get_decoder_vectors(layer, feature_ids.cpu())  # type: ignore[union-attr]
        rows = self.transcoders[layer]._get_decoder_vectors(feature_ids)  # type: ignore[index]
        return rows.unsqueeze(1)
