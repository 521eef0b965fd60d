"""The memory estimate (tracerflow/memory.py): its formula on a case worked out by hand, the
search for a max_feature_nodes that fits, and the shapes it reads from configs and presets."""

from __future__ import annotations

import pytest

from tracerflow.memory import (
    ModelShape,
    TranscoderShape,
    estimate_memory,
    largest_fitting_feature_nodes,
    parse_memory_limit,
    size_text,
)
from tracerflow.shapes import model_shape, shape_of_config, transcoder_shape

# 2 layers, d_model 4, one head, d_mlp 8, vocabulary 10, rotary (no positional embedding).
TINY_MODEL = ModelShape(n_layers=2, d_model=4, n_heads=1, d_head=4, d_mlp=8, d_vocab=10)
TINY_CLT = TranscoderShape(kind="clt", n_layers=2, d_model=4, d_features=8, k=1)
TINY_OPTIONS = {"n_tokens": 3, "max_n_logits": 1, "batch_size": 1, "baseline_bytes": 0}


def test_the_estimate_of_a_tiny_clt_run_is_the_sum_worked_out_by_hand() -> None:
    estimate = estimate_memory(TINY_MODEL, TINY_CLT, max_feature_nodes=None, **TINY_OPTIONS)

    # params: attention 2 layers * 2 * 4 * 4 * (1 + 1) = 128, MLP 2 * 2 * 4 * 8 = 128,
    # embeddings (2 * 10) * 4 = 80: 336 float32 = 1344 bytes; the CLT's encoder 2 * 8 * 4 = 64
    # floats = 256 bytes. Active: 2 layers * (3 - 1) positions * k 1 = 4, all kept; nodes
    # 4 + (2 + 1) * 3 + 1 logit = 14.
    assert (estimate.n_active, estimate.n_feature_nodes, estimate.n_nodes) == (4, 4, 14)
    features = estimate.stages["features"]
    assert features == {
        "baseline": 0,
        "model weights": 1344,
        "transcoder weights": 256,
        "packed decoder vectors": 4 * 1.5 * 4 * 4 + 2 * 3 * 4 * 4,  # 96 + error slots 96
        "encoder vectors": 4 * 4 * 4,
        # W_O and W_V copies 2 * 2 * 4 * 4 * 4, patterns 2 * 1 * 3 * 3 * 4, token kernel 3*3*4*4
        "backward weights": 256 + 72 + 144,
        "attribution rows": 14 * 14 * 4,
        "re-ranking copy": 0,
        # 32 rows * 4 bytes * (2 * row size 13 + 4 * 3 * 4 + 2 * 3 positions * 3 slots)
        "row block": 32 * 4 * (26 + 48 + 18),
    }
    assert estimate.stage_totals["score"] == 1344 + 256 + int(2.25 * 14 * 14 * 4)
    assert estimate.stage_totals["model load"] == 3 * 1344 + 256
    assert estimate.peak_stage == "features"
    assert estimate.total_bytes == 14888


def test_a_binding_max_feature_nodes_keeps_rows_in_visiting_order_then_packages() -> None:
    options = {**TINY_OPTIONS, "n_tokens": 9}  # 2 * 8 * 1 = 16 active features
    estimate = estimate_memory(TINY_MODEL, TINY_CLT, max_feature_nodes=5, **options)

    n_nodes = 16 + 3 * 9 + 1
    assert estimate.stages["features"]["attribution rows"] == (5 + 1) * n_nodes * 4
    # re-ranked every 4 * batch_size = 4 rows: last before the 5th feature, after 1 + 4 rows
    assert estimate.stages["features"]["re-ranking copy"] == (1 + 4) * n_nodes * 4
    assert estimate.stages["package"]["adjacency"] == (5 + 3 * 9 + 1) ** 2 * 4


def test_offloading_to_disk_frees_the_transcoders_mlps_and_embeddings_while_rows_run() -> None:
    kept = estimate_memory(TINY_MODEL, TINY_CLT, max_feature_nodes=None, **TINY_OPTIONS)
    offloaded = estimate_memory(
        TINY_MODEL, TINY_CLT, max_feature_nodes=None, offload="disk", **TINY_OPTIONS
    )

    assert offloaded.stages["features"]["transcoder weights"] == 0
    assert offloaded.stages["features"]["model weights"] == (336 - 128 - 80) * 4
    assert offloaded.stages["score"] == kept.stages["score"]  # reloaded before scoring


def test_without_k_an_assumed_number_of_features_is_active_and_said_so() -> None:
    relu = TranscoderShape(kind="plt", n_layers=2, d_model=4, d_features=1000)
    estimate = estimate_memory(TINY_MODEL, relu, max_feature_nodes=None, **TINY_OPTIONS)

    assert estimate.n_active == 2 * 2 * 64
    assert "assumes 64 active features" in estimate.notes[0]


def test_the_largest_fitting_max_feature_nodes_fits_and_one_more_does_not() -> None:
    model = ModelShape(n_layers=12, d_model=768, n_heads=12, d_head=64, d_mlp=3072, d_vocab=50257)
    clt = TranscoderShape(kind="clt", n_layers=12, d_model=768, d_features=16000, k=16)
    options = {"n_tokens": 200, "max_n_logits": 10, "batch_size": 256}
    everything = estimate_memory(model, clt, max_feature_nodes=None, **options)
    available = everything.total_bytes // 2

    fitting = largest_fitting_feature_nodes(available, model, clt, **options)

    assert fitting is not None and fitting % 64 == 0

    def need(nodes: int) -> int:
        return estimate_memory(model, clt, max_feature_nodes=nodes, **options).total_bytes

    assert need(fitting) <= available < need(fitting + 64)
    assert largest_fitting_feature_nodes(2**20, model, clt, **options) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8GiB", 8 * 2**30), ("12G", 12 * 10**9), ("500 MB", 500 * 10**6), ("1024", 1024)],
)
def test_memory_limits_read_as_sizes(text: str, expected: int) -> None:
    assert parse_memory_limit(text) == expected


def test_a_memory_limit_of_off_skips_and_nonsense_is_refused() -> None:
    assert parse_memory_limit("off") is None
    with pytest.raises(ValueError, match="TRACERFLOW_MEMORY_LIMIT must be a size"):
        parse_memory_limit("lots")


def test_gpt2s_shape_is_known_without_its_config_and_counts_124m_parameters() -> None:
    shape = model_shape("gpt2")

    assert shape is not None and (shape.n_layers, shape.d_model) == (12, 768)
    assert 120e6 < shape.n_params < 170e6  # 124M, with its own (untied) unembedding: 163M


def test_llama_family_configs_have_gated_mlps_and_grouped_heads() -> None:
    config = {
        "num_hidden_layers": 16,
        "hidden_size": 2048,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 8192,
        "vocab_size": 128256,
    }
    shape = shape_of_config(config)

    assert shape is not None and shape.gated_mlp and shape.n_kv_heads == 8
    assert 1.2e9 < shape.n_params < 1.6e9  # Llama-3.2-1B: 1.24B, untied unembedding 1.5B


def test_presets_shapes_come_from_their_folders_or_their_declared_features() -> None:
    toy = transcoder_shape("toy-clt")
    hub = transcoder_shape("gpt2-clt-16k")

    assert toy is not None and (toy.kind, toy.n_layers, toy.k) == ("clt", 3, 12)
    assert hub is not None and (hub.n_layers, hub.d_model, hub.d_features, hub.k) == (
        12,
        768,
        16000,
        16,
    )
    assert transcoder_shape("nobody/not-downloaded") is None


def test_presets_shows_the_memory_each_presets_run_needs() -> None:
    from typer.testing import CliRunner

    from tracerflow.cli import app
    from tracerflow.cli.presets import preset_memory_bytes

    result = CliRunner().invoke(app, ["presets"])

    assert result.exit_code == 0, result.output
    header, *rows = result.output.splitlines()
    assert header.split()[-1] == "memory"
    toy_row = next(row for row in rows if row.startswith("toy-clt "))
    toy_bytes = preset_memory_bytes("toy-clt")
    assert toy_bytes is not None and toy_row.endswith(size_text(toy_bytes))
    clt_bytes = preset_memory_bytes("gpt2-clt-16k")
    assert clt_bytes is not None and clt_bytes > toy_bytes + 2**30  # GPT-2 and a 16k CLT


def test_the_estimates_block_of_rows_is_the_attributions_own_on_a_cpu() -> None:
    from tracerflow.attribution.run import DEFAULT_BLOCK_SIZE
    from tracerflow.memory import CPU_BLOCK_ROWS

    assert DEFAULT_BLOCK_SIZE["cpu"] == CPU_BLOCK_ROWS
