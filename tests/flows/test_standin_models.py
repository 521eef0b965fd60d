"""`tracerflow run` on models other than GPT-2: tiny Llama-, Qwen3- and Gemma-2-architecture local
model folders (``tests/standin_models.py``), each with a circuit-tracer-format PLT and CLT using
the hooks the published sets use, and ``Qwen/Qwen3-0.6B`` by its official name from a Hub-shaped
cache at reduced size.

Each local run is the CLI's own request, checked at the door and run by the scoring flow in this
process; its stored graphs and scores must be what circuit-tracer's ``attribute`` and
``compute_graph_scores`` give, run by hand on the same files loaded by circuit-tracer's own
loaders. Which attribution computed each graph is recorded: tracerflow's fast path only where it
is proven exact, circuit-tracer's own elsewhere.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import duckdb
import pytest
import torch
from circuit_tracer import ReplacementModel
from circuit_tracer import attribute as circuit_tracer_attribute
from circuit_tracer.graph import compute_graph_scores
from circuit_tracer.transcoder import load_transcoder_set
from circuit_tracer.transcoder.cross_layer_transcoder import load_clt
from safetensors.torch import load_file

from tests.attribution.test_exactness import assert_same_graph
from tests.flows.test_real_presets import run_cli
from tests.standin_models import (
    CLT_HOOKS,
    D_MODEL,
    N_LAYERS,
    PLT_HOOKS,
    QWEN3_REPO,
    write_model_folder,
    write_qwen3_hub_repo,
    write_transcoder,
)
from tests.synthetic import NOTEBOOK_PROMPT
from tracerflow.flows.score import score_flow
from tracerflow.flows.validation import validate_run_request
from tracerflow.parameters import run_request
from tracerflow.settings import get_settings
from tracerflow.storage.graphs import load_graph

SCORE_ATOL = 1e-6
pytestmark = pytest.mark.slow  # three flow runs in this process and one CLI run (~2 min)
# Which attribution each stand-in's transcoders take on CPU, and why circuit-tracer's: the fast
# path covers RMSNorm, rotary positions and the attention of these Llama and Qwen3 stand-ins
# (grouped key/value heads; Qwen3's q/k norms only shape the frozen pattern), with features read
# at the residual stream (the CLTs) or the normalised MLP input (the PLTs); Gemma-2's norms after
# attention and MLP take circuit-tracer's own attribution.
EXPECTED_PATHS = {
    ("llama", "plt"): ("fast", None),
    ("llama", "clt"): ("fast", None),
    ("qwen3", "plt"): ("fast", None),
    ("qwen3", "clt"): ("fast", None),
    ("gemma2", "plt"): ("circuit-tracer", "norms after attention/MLP"),
    ("gemma2", "clt"): ("circuit-tracer", "norms after attention/MLP"),
}
SEEDS = {"llama": 10, "qwen3": 20, "gemma2": 30}


@pytest.fixture(scope="module")
def standins(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """One folder per architecture: ``model/``, ``plt/`` and ``clt/``. The PLTs are JumpReLU
    (as GemmaScope's), the Llama CLT ReLU, the others JumpReLU."""
    root = tmp_path_factory.mktemp("standins")
    for architecture, seed in SEEDS.items():
        folder = root / architecture
        write_model_folder(folder / "model", architecture, tiny_tokenizer_dir, seed)
        write_transcoder(folder / "plt", "plt", seed=seed + 1)
        clt_activation = "relu" if architecture == "llama" else "jump_relu"
        write_transcoder(folder / "clt", "clt", seed=seed + 2, activation=clt_activation)
    return root


def wrapped_name(name: str) -> str:
    """A ``HookedTransformer`` parameter's name once circuit-tracer wrapped each MLP and the
    unembedding (``ReplacementMLP``, ``ReplacementUnembed``)."""
    name = re.sub(r"^(blocks\.\d+\.mlp)\.", r"\1.old_mlp.", name)
    return re.sub(r"^unembed\.", "unembed.old_unembed.", name)


def by_hand_model(model_folder: Path, transcoder_folder: Path, kind: str) -> Any:
    """circuit-tracer's replacement model of a local folder, assembled without tracerflow: its
    own loaders for the transcoder, ``from_config`` and the folder's weights for the model."""
    from transformer_lens import HookedTransformerConfig

    hooks = PLT_HOOKS if kind == "plt" else CLT_HOOKS
    if kind == "plt":
        paths = {i: str(transcoder_folder / f"layer_{i}.safetensors") for i in range(N_LAYERS)}
        transcoders: Any = load_transcoder_set(
            paths, "by-hand", *hooks, device=torch.device("cpu"), lazy_encoder=False,
            lazy_decoder=False,
        )  # fmt: skip
    else:
        transcoders = load_clt(
            str(transcoder_folder), *hooks, scan="by-hand", device=torch.device("cpu"),
            dtype=torch.float32,
        )  # fmt: skip
    fields = json.loads((model_folder / "config.json").read_text())
    config = HookedTransformerConfig(**fields, tokenizer_name=str(model_folder), device="cpu")
    model = ReplacementModel.from_config(config, transcoders)
    weights = {
        wrapped_name(name): tensor
        for name, tensor in load_file(str(model_folder / "model.safetensors")).items()
    }
    _, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected
    return model.eval()


def run_rows(flow_run_id: Any) -> list[dict[str, Any]]:
    with duckdb.connect(str(get_settings().database_path), read_only=True) as con:
        cursor = con.execute(
            "SELECT s.status, s.error, s.attribution_path, s.params_json, s.replacement_score, "
            "s.completeness_score, s.graph_path, s.transcoder_format, t.source, "
            "m.name AS model, m.n_layers, m.d_model FROM scores_wide s "  # absolute paths
            "JOIN transcoders t USING (transcoder_id) JOIN models m USING (model_id) "
            "WHERE s.flow_run_id = ?",
            [str(flow_run_id)],
        )
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]


@pytest.mark.parametrize("architecture", list(SEEDS))
def test_a_run_on_a_local_model_gives_circuit_tracers_graphs_and_scores(
    architecture: str, standins: Path, home: Path
):
    folder = standins / architecture
    request = run_request(
        transcoders=[str(folder / "plt"), str(folder / "clt")],
        prompts=[NOTEBOOK_PROMPT],
        model=str(folder / "model"),
    )
    validate_run_request(request)  # what `tracerflow run` checks before it starts the flow
    state = score_flow(request, return_state=True)
    assert state.is_completed(), state.message
    rows = {Path(row["source"]).name: row for row in run_rows(state.state_details.flow_run_id)}
    assert sorted(rows) == ["clt", "plt"]
    for kind, row in rows.items():
        assert row["status"] == "ok", row["error"]
        assert (row["model"], row["n_layers"], row["d_model"]) == (
            str(folder / "model"), N_LAYERS, D_MODEL,
        )  # fmt: skip
        assert row["transcoder_format"] == "circuit-tracer"
        path, reason = EXPECTED_PATHS[architecture, kind]
        assert row["attribution_path"] == path, kind
        stats = json.loads((Path(row["graph_path"]).parent / "attribution.json").read_text())
        assert (stats["stock_reason"] is None) == (reason is None), stats["stock_reason"]
        assert reason is None or reason in stats["stock_reason"]

        params = json.loads(row["params_json"])
        model = by_hand_model(folder / "model", folder / kind, kind)
        expected = circuit_tracer_attribute(
            NOTEBOOK_PROMPT,
            model,
            max_n_logits=params["max_n_logits"],
            desired_logit_prob=params["desired_logit_prob"],
            max_feature_nodes=params["max_feature_nodes"],
            batch_size=params["batch_size"],
        )
        stored = load_graph(Path(row["graph_path"]).parent)
        assert_same_graph(expected, stored)
        replacement, completeness = compute_graph_scores(expected)
        assert abs(row["replacement_score"] - replacement) <= SCORE_ATOL, kind
        assert abs(row["completeness_score"] - completeness) <= SCORE_ATOL, kind


def test_qwen3_by_its_official_name_runs_offline_from_a_hub_shaped_cache(
    standins: Path, tiny_tokenizer_dir: Path, prefect_api: None, tmp_path: Path
):
    """`tracerflow run --model Qwen/Qwen3-0.6B`, the real CLI in a fresh interpreter: the door
    finds the model in the cache, TransformerLens reads its shape from the cached
    ``config.json`` and loads it by name (with grouped key/value heads and a head size apart from
    d_model / n_heads, as the real one), and the fast attribution runs on it."""
    hf_home = tmp_path / "hf-home"
    repo = write_qwen3_hub_repo(hf_home / "hub", tiny_tokenizer_dir)
    home = tmp_path / "home"
    plt = standins / "qwen3" / "plt"
    arguments = ["run", "--model", QWEN3_REPO, "--transcoder", str(plt)]
    result = run_cli([*arguments, "--prompt", NOTEBOOK_PROMPT], hf_home, home)
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        ((status, path, model, n_layers, d_model, replacement),) = con.execute(
            "SELECT s.status, s.attribution_path, m.name, m.n_layers, m.d_model, "
            "s.replacement_score FROM scores s JOIN models m USING (model_id)"
        ).fetchall()
    assert (status, path, model, n_layers, d_model) == (
        "ok", "fast", QWEN3_REPO, N_LAYERS, D_MODEL,
    )  # fmt: skip
    assert 0.0 < replacement <= 1.0
    assert repo.snapshot.is_dir()
