"""The real presets (``gpt2-clt-16k``, ``gpt2-plt-16k``) end to end, offline: the real CLI in a
fresh interpreter with ``HF_HUB_OFFLINE=1`` and ``HF_HOME`` on a Hub-shaped cache
(``tests/hub_cache.py``), so the transcoders come through ``snapshot_download`` and GPT-2 through
TransformerLens's own loading, as they would for a user with a warm cache.

One run scores both presets, one named by ``--preset``, the other by ``--transcoder``; each test
reads its preset's part of that run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest

from tests.hub_cache import CLT_REPO, D_MODEL, N_FEATURES, N_LAYERS, PLT_REPO, TOP_K, HubCache
from tests.synthetic import NOTEBOOK_PROMPT
from tracerflow.dashboards.pack import graph_file_features, pack_features

REPO_ROOT = Path(__file__).resolve().parents[2]


def run_cli(arguments: list[str], hf_home: Path, home: Path) -> subprocess.CompletedProcess[str]:
    """``tracerflow <arguments>`` as a user runs it offline, reporting to the test's Prefect API."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "HF_HOME": str(hf_home),
        "HF_HUB_OFFLINE": "1",
        "TRACERFLOW_HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@dataclass(frozen=True)
class RealPresetsRun:
    result: subprocess.CompletedProcess[str]
    home: Path


@pytest.fixture(scope="module")
def real_presets_run(
    hub_cache: HubCache, prefect_api: None, tmp_path_factory: pytest.TempPathFactory
) -> RealPresetsRun:
    """`tracerflow run` of both real presets on the notebook prompt, in one fresh home."""
    home = tmp_path_factory.mktemp("real-presets") / "home"
    arguments = ["run", "--transcoder", "gpt2-clt-16k", "--preset", "gpt2-plt-16k"]
    result = run_cli([*arguments, "--prompt", NOTEBOOK_PROMPT], hub_cache.hf_home, home)
    return RealPresetsRun(result=result, home=home)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("preset", "repo_id", "kind"),
    [("gpt2-clt-16k", CLT_REPO, "clt"), ("gpt2-plt-16k", PLT_REPO, "plt")],
)
def test_real_preset_scores_offline_from_the_hub_cache(
    preset, repo_id, kind, hub_cache: HubCache, real_presets_run: RealPresetsRun
):
    result, home = real_presets_run.result, real_presets_run.home
    assert result.returncode == 0, result.stdout + result.stderr
    scores, metrics = result.stdout.split("transcoder quality")  # the metrics follow the scores
    table = [line for line in scores.splitlines() if line.startswith(f"{preset} ")]
    assert len(table) == 1 and table[0].rstrip().endswith("ok"), result.stdout
    (quality,) = [line for line in metrics.splitlines() if line.startswith(f"{preset} ")]
    assert quality.split()[1] == "prompts"  # no held-out corpus in the preset: the prompts
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        cursor = con.execute(
            "SELECT s.status, t.revision, t.commit_sha, t.kind, t.n_layers, t.d_model, "
            "t.d_features, t.activation, t.k, m.name AS model, m.n_layers AS model_n_layers, "
            "m.d_model AS model_d_model, s.replacement_score, s.completeness_score, s.slug "
            "FROM scores s JOIN transcoders t USING (transcoder_id) JOIN models m USING (model_id) "
            "JOIN prompts p USING (prompt_id) WHERE t.source = ? AND p.text = ?",
            [preset, NOTEBOOK_PROMPT],
        )
        names = [column[0] for column in cursor.description]
        rows = [dict(zip(names, values, strict=True)) for values in cursor.fetchall()]
    (row,) = rows
    assert row["status"] == "ok"
    # The commit refs/main points at: the preset really came through the Hub cache.
    assert (row["revision"], row["commit_sha"]) == ("main", hub_cache.repos[repo_id].commit_sha)
    transcoder = [row[name] for name in ("kind", "n_layers", "d_model", "d_features", "activation")]
    assert transcoder == [kind, N_LAYERS, D_MODEL, N_FEATURES, "topk"] and row["k"] == TOP_K
    assert (row["model"], row["model_n_layers"], row["model_d_model"]) == ("gpt2", 12, 768)
    assert 0.0 < row["replacement_score"] < 1.0 and 0.0 < row["completeness_score"] < 1.0
    # The viewer's files, written with the tokenizer reloaded by its Hub name.
    graph = home / "graph-files" / f"{row['slug']}.json"
    assert graph.is_file()
    # Its feature pack: the graph's features over the prompt (the Hub presets name no corpus).
    scan = json.loads(graph.read_text())["metadata"]["scan"]
    assert pack_features(home / "graph-files" / "features" / scan) == graph_file_features(graph)
