"""tracerflow's attribution yields circuit-tracer's graph: same nodes, same edges, same scores.

Each case runs ``circuit_tracer.attribute`` and ``tracerflow.attribution.attribute`` on the same
model, prompt and batch size and compares: identical active features, selected features and logit
targets; adjacency equal within 1e-5 of its largest entry; replacement and completeness scores
within 1e-6.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from circuit_tracer import attribute as stock_attribute
from circuit_tracer.graph import Graph, compute_graph_scores

import tracerflow.attribution.run as attribution_module
import tracerflow.compat as compat
from tests.standin_models import LLAMA3_ROPE
from tests.synthetic import NOTEBOOK_PROMPT, random_replacement_model
from tracerflow.attribution import attribute

ADJACENCY_RTOL = 1e-5
SCORE_ATOL = 1e-6


def assert_same_graph(expected: Graph, actual: Graph) -> None:
    assert torch.equal(expected.input_tokens, actual.input_tokens)
    assert torch.equal(expected.active_features, actual.active_features)
    assert torch.equal(expected.activation_values, actual.activation_values)
    assert torch.equal(expected.selected_features, actual.selected_features)
    assert list(expected.logit_targets) == list(actual.logit_targets)
    assert torch.equal(expected.logit_probabilities, actual.logit_probabilities)
    assert expected.adjacency_matrix.shape == actual.adjacency_matrix.shape
    scale = expected.adjacency_matrix.abs().max()
    error = (expected.adjacency_matrix - actual.adjacency_matrix).abs().max()
    assert error <= ADJACENCY_RTOL * scale, f"adjacency differs by {error / scale:.2e} of max"
    for want, got in zip(compute_graph_scores(expected), compute_graph_scores(actual), strict=True):
        assert abs(want - got) <= SCORE_ATOL


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("attribution-models")


def make_model(workdir: Path, kind: str, **shape: Any) -> Any:
    settings: dict[str, Any] = {"n_layers": 3, "d_model": 48, "n_heads": 4, "d_features": 96}
    settings.update(shape)
    return random_replacement_model(workdir, kind=kind, k=6, seed=7, **settings)


def compare(model: Any, **options: Any) -> None:
    expected = stock_attribute(NOTEBOOK_PROMPT, model, **options)
    result = attribute(NOTEBOOK_PROMPT, model, **options)
    assert result.fast_path
    assert_same_graph(expected, result.graph)


@pytest.mark.parametrize("kind", ["clt", "plt"])
@pytest.mark.parametrize(
    ("max_feature_nodes", "batch_size"),
    [(None, 16), (None, 256), (40, 16), (70, 8)],
    ids=["all-features", "one-block", "binding", "binding-uneven-queue"],
)
def test_graph_matches_circuit_tracer(workdir, kind, max_feature_nodes, batch_size):
    model = make_model(workdir, kind)
    compare(model, batch_size=batch_size, max_feature_nodes=max_feature_nodes)


@pytest.mark.parametrize("kind", ["clt", "plt"])
def test_graph_matches_on_two_and_four_layer_models(workdir, kind):
    compare(make_model(workdir, kind, n_layers=2, d_model=32, n_heads=2), batch_size=32)
    compare(make_model(workdir, kind, n_layers=4, d_model=64, d_features=128), batch_size=24)


# The blocks of the architectures circuit-tracer's published transcoders sit on, at toy size:
# Llama's RMSNorm, rotary positions with its NTK scaling and gated SiLU MLP; Qwen3's q/k norms
# and a head size apart from d_model / n_heads; both with full or grouped key/value heads;
# Gemma-2's soft caps and local attention (its norms after attention and MLP fall back).
_RMS_ROTARY = {
    "normalization_type": "RMS",
    "final_rms": True,
    "positional_embedding_type": "rotary",
    "rotary_adjacent_pairs": False,
    "gated_mlp": True,
    "act_fn": "silu",
}
LLAMA_LIKE = {
    **_RMS_ROTARY,
    **LLAMA3_ROPE,
    "rotary_dim": 12,
    "original_architecture": "LlamaForCausalLM",
}
QWEN3_LIKE = {
    **_RMS_ROTARY,
    "d_head": 16,
    "rotary_dim": 16,
    "use_qk_norm": True,
    "original_architecture": "Qwen3ForCausalLM",
}
POST_NORMS = {"normalization_type": "RMS", "use_normalization_before_and_after": True}
SOFT_CAPPED_LOCAL = {
    **_RMS_ROTARY,
    "rotary_dim": 12,
    "act_fn": "gelu_pytorch_tanh",
    "attn_scores_soft_cap": 50.0,
    "output_logits_soft_cap": 30.0,
    "use_local_attn": True,
    "window_size": 4,
    "attn_types": ["global", "local", "global"],
    "original_architecture": "Gemma2ForCausalLM",
}


@pytest.mark.parametrize(
    "config",
    [
        {"normalization_type": "LNPre"},
        {"normalization_type": "RMS"},
        {"positional_embedding_type": "rotary", "rotary_dim": 12},
        LLAMA_LIKE,
        QWEN3_LIKE,
        SOFT_CAPPED_LOCAL,
        {**LLAMA_LIKE, "n_key_value_heads": 2},
        {**QWEN3_LIKE, "n_key_value_heads": 2},
    ],
    ids=[
        "lnpre",
        "rms",
        "rotary",
        "llama-like",
        "qwen3-like",
        "soft-capped-local-attention",
        "llama-like-grouped-kv",
        "qwen3-like-grouped-kv",
    ],
)
def test_graph_matches_on_other_supported_architectures(workdir, config):
    model = make_model(workdir, "clt", **config)
    compare(model, batch_size=16, max_feature_nodes=50)


@pytest.mark.parametrize("kind", ["clt", "plt"])
@pytest.mark.parametrize("config", [{}, LLAMA_LIKE], ids=["layernorm", "llama-like"])
def test_graph_matches_with_features_read_at_the_normalised_mlp_input(workdir, kind, config):
    """The published Gemma, Llama and Qwen3 PLTs read ``ln2.hook_normalized``: circuit-tracer
    injects their encoder vectors there, before ln2's frozen scale (and LayerNorm's centering)."""
    from circuit_tracer import ReplacementModel

    transcoders = make_model(workdir, kind, **config).transcoders
    transcoders.feature_input_hook = "ln2.hook_normalized"
    model = ReplacementModel.from_config(make_model(workdir, kind, **config).cfg, transcoders)
    compare(model, batch_size=16, max_feature_nodes=50)
    compare(model, batch_size=16)


def test_a_skip_connection_read_at_the_normalised_mlp_input_takes_circuit_tracers_path(workdir):
    from circuit_tracer import ReplacementModel

    from tracerflow.attribution import fast_path_unavailable

    transcoders = make_model(workdir, "plt").transcoders
    transcoders.feature_input_hook = "ln2.hook_normalized"
    transcoders.skip_connection = True
    model = ReplacementModel.from_config(make_model(workdir, "plt").cfg, transcoders)
    assert fast_path_unavailable(model) == "a skip connection read at the normalised MLP input"


def test_graph_matches_with_skip_connections(workdir):
    from circuit_tracer import ReplacementModel

    model = make_model(workdir, "clt")
    transcoders = model.transcoders
    generator = torch.Generator().manual_seed(3)
    d_model = transcoders.d_model
    transcoders.W_skip = torch.nn.Parameter(
        torch.randn(transcoders.n_layers, d_model, d_model, generator=generator) * 0.05,
        requires_grad=False,
    )
    transcoders.skip_connection = True
    skip_model = ReplacementModel.from_config(model.cfg, transcoders)
    compare(skip_model, batch_size=16)


def test_block_size_does_not_change_the_graph(workdir):
    model = make_model(workdir, "clt")
    expected = stock_attribute(NOTEBOOK_PROMPT, model, batch_size=16, max_feature_nodes=50)
    for block_size in (1, 7, 512):
        result = attribute(
            NOTEBOOK_PROMPT, model, batch_size=16, max_feature_nodes=50, block_size=block_size
        )
        assert result.block_size == block_size
        assert_same_graph(expected, result.graph)


def test_progress_reports_every_block_up_to_the_total(workdir):
    calls: list[tuple[int, int]] = []
    result = attribute(
        NOTEBOOK_PROMPT,
        make_model(workdir, "clt"),
        batch_size=16,
        block_size=16,
        max_feature_nodes=40,
        progress=lambda done, total: calls.append((done, total)),
    )
    assert calls == [(16, 40), (32, 40), (40, 40)]
    assert result.batch_size == 16


def test_defaults_match_circuit_tracers_defaults_and_report_costs(workdir):
    model = make_model(workdir, "plt")
    expected = stock_attribute(NOTEBOOK_PROMPT, model, max_feature_nodes=60)
    result = attribute(NOTEBOOK_PROMPT, model, max_feature_nodes=60)
    assert result.batch_size == attribution_module.CIRCUIT_TRACER_BATCH_SIZE
    assert result.block_size == attribution_module.DEFAULT_BLOCK_SIZE["cpu"]
    assert_same_graph(expected, result.graph)
    assert set(result.phase_seconds) >= {"precompute", "logits", "features", "package", "total"}
    if sys.platform == "linux":  # /proc/self/status has VmHWM: the peak must be measured
        # a process that has loaded torch and a model holds far more than 1 MiB
        assert result.peak_rss_bytes is not None and result.peak_rss_bytes > 1 << 20
    else:
        assert result.peak_rss_bytes is None or result.peak_rss_bytes > 0


@pytest.mark.parametrize("threads", [1, 2])
def test_every_block_runs_at_the_thread_count_set_and_the_process_setting_returns(workdir, threads):
    before = torch.get_num_threads()
    seen: set[int] = set()
    result = attribute(
        NOTEBOOK_PROMPT,
        make_model(workdir, "clt"),
        batch_size=8,
        block_size=4,
        max_feature_nodes=40,
        threads=threads,
        progress=lambda done, total: seen.add(torch.get_num_threads()),
    )
    assert seen == {threads}  # never switched during the run, whatever the timings
    assert result.threads == threads
    assert torch.get_num_threads() == before


def test_without_a_thread_count_it_runs_at_the_process_setting(workdir):
    result = attribute(NOTEBOOK_PROMPT, make_model(workdir, "plt"), batch_size=16)
    assert result.threads == torch.get_num_threads()


def test_the_same_inputs_at_the_same_thread_count_give_the_same_graph_bit_for_bit(workdir):
    """max_feature_nodes binds and features are re-ranked every 4 batches: a near-tie decided
    differently would select other features; at one thread count nothing may differ."""
    model = make_model(workdir, "clt")
    options = {"batch_size": 4, "block_size": 3, "max_feature_nodes": 30, "threads": 2}
    first, second = (attribute(NOTEBOOK_PROMPT, model, **options).graph for _ in range(2))
    for name in ("adjacency_matrix", "selected_features", "active_features", "activation_values",
                 "logit_probabilities", "input_tokens"):  # fmt: skip
        assert torch.equal(getattr(first, name), getattr(second, name)), name
    assert compute_graph_scores(first) == compute_graph_scores(second)


def test_unvalidated_circuit_tracer_falls_back_with_a_warning(workdir, monkeypatch):
    model = make_model(workdir, "clt")  # loading refuses another release: load first
    monkeypatch.setattr(compat, "VALIDATED_CIRCUIT_TRACER", "0.0.0")
    expected = stock_attribute(NOTEBOOK_PROMPT, model, batch_size=16)
    with pytest.warns(RuntimeWarning, match="circuit-tracer"):
        result = attribute(NOTEBOOK_PROMPT, model, batch_size=16)
    assert not result.fast_path
    assert "features" in result.phase_seconds
    assert_same_graph(expected, result.graph)


def test_unsupported_architecture_falls_back_with_a_warning(workdir):
    model = make_model(workdir, "plt", **POST_NORMS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = stock_attribute(NOTEBOOK_PROMPT, model, batch_size=16)
    with pytest.warns(RuntimeWarning, match="norms after attention/MLP"):
        result = attribute(NOTEBOOK_PROMPT, model, batch_size=16)
    assert not result.fast_path
    assert_same_graph(expected, result.graph)


def test_stock_phases_are_timed_even_if_its_logger_already_has_a_handler(workdir):
    """circuit-tracer only logs its phases when its "attribution" logger has no handler."""
    import logging

    from tracerflow.attribution.stock import run_stock

    logger = logging.getLogger("attribution")
    stray = logging.NullHandler()
    logger.addHandler(stray)
    before = list(logger.handlers)
    try:
        _, usage = run_stock(NOTEBOOK_PROMPT, make_model(workdir, "clt"), batch_size=16)
        assert logger.handlers == before, "the handlers set aside are put back"
    finally:
        logger.removeHandler(stray)
    assert {"precompute", "features", "total"} <= set(usage)


@pytest.mark.parametrize("offload", ["cpu", "disk"])
def test_offloading_gives_the_same_graph_and_puts_every_module_back(workdir, offload):
    """circuit-tracer's ``offload`` moves the transcoders, MLPs and embeddings out between phases;
    the graph is the one without offloading, and afterwards the model is whole again."""
    model = make_model(workdir, "clt")
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    expected = stock_attribute(NOTEBOOK_PROMPT, model, batch_size=16)
    result = attribute(NOTEBOOK_PROMPT, model, batch_size=16, offload=offload)
    assert_same_graph(expected, result.graph)
    after = model.state_dict()
    assert after.keys() == before.keys()
    for name, tensor in before.items():
        assert after[name].device == tensor.device, name
        assert torch.equal(after[name], tensor), name


def test_cuda_takes_circuit_tracers_attribution_unless_the_user_opts_in():
    """The fast path has not been validated on a GPU: CUDA runs circuit-tracer's own attribution
    by default; TRACERFLOW_CUDA_FAST_PATH=1 (``fast_path_on_cuda``) opts in. What the fast path
    does not cover takes circuit-tracer's path on any device."""
    from tracerflow.attribution.run import CUDA_NOT_VALIDATED, stock_path_reason

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert stock_path_reason(cuda, None, fast_path_on_cuda=False) == CUDA_NOT_VALIDATED
    assert stock_path_reason(cuda, None, fast_path_on_cuda=True) is None
    assert stock_path_reason(cpu, None, fast_path_on_cuda=False) is None
    assert stock_path_reason(cpu, "grouped-query attention", False) == "grouped-query attention"
    assert stock_path_reason(cuda, "grouped-query attention", True) == "grouped-query attention"


@pytest.mark.parametrize("chunk_rows", [1, 7])
def test_packaging_a_few_rows_at_a_time_gives_the_same_graph(workdir, monkeypatch, chunk_rows):
    """With ``max_feature_nodes`` binding, packaging gathers rows from visiting order into the
    matrix in chunks; chunks that split the features and logits unevenly change nothing."""
    import tracerflow.attribution.phases as phases

    model = make_model(workdir, "plt")
    expected = stock_attribute(NOTEBOOK_PROMPT, model, batch_size=8, max_feature_nodes=45)
    monkeypatch.setattr(phases, "_PACKAGE_CHUNK_ROWS", chunk_rows)
    result = attribute(NOTEBOOK_PROMPT, model, batch_size=8, max_feature_nodes=45)
    assert_same_graph(expected, result.graph)
