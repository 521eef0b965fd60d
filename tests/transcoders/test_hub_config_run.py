"""``tracerflow run`` on a circuit-tracer Hub config, offline: its repo holds only ``config.yaml``,
whose ``transcoders`` list points (``hf://...?revision=``) at the layer files in a second repo.
Both repos come from the Hugging Face cache; the row records the config repo's commit as the
transcoder's and the second repo's commit for every file it read, and scores exactly as the toy
PLT whose files they are."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest
import yaml

from tests.hub_cache import write_hub_repo
from tests.reliability.harness import run_cli
from tests.transcoders.foreign_formats import circuit_tracer_folder
from tracerflow import toy

PROMPT = "Mary and John went to the store, John gave a drink to"
CONFIG_REPO = "someone/toy-plt-config"
LAYERS_REPO = "someone/toy-plt-layers"


def test_a_hub_config_runs_offline_and_records_both_repos_commits(
    prefect_api: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub_cache = tmp_path / "hf" / "hub"
    layers = circuit_tracer_folder(toy.transcoder_dir("plt"), tmp_path / "layers")
    names = sorted(path.name for path in layers.glob("layer_*.safetensors"))
    layers_repo = write_hub_repo(
        hub_cache, LAYERS_REPO, {name: (layers / name).read_bytes() for name in names}
    )
    # pinned to the commit, as circuit-tracer's configs may be; the last entry by branch
    revisions = [layers_repo.commit_sha] * (len(names) - 1) + ["main"]
    entries = [
        f"hf://{LAYERS_REPO}/{name}?revision={revision}"
        for name, revision in zip(names, revisions, strict=True)
    ]
    config = {
        "model_kind": "transcoder_set",
        "feature_input_hook": "hook_resid_mid",
        "feature_output_hook": "hook_mlp_out",
        "model_name": "toy-gpt2",
        "activation": "topk",
        "k": 12,
        "transcoders": entries,
    }
    config_repo = write_hub_repo(
        hub_cache, CONFIG_REPO, {"config.yaml": yaml.safe_dump(config).encode()}
    )
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    home = tmp_path / "home"

    arguments = ["--model", "toy-gpt2", "--prompt", PROMPT]
    result = run_cli([*arguments, "--transcoder", "toy-plt", "--transcoder", CONFIG_REPO], home)

    assert result.returncode == 0, result.stdout + result.stderr
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT t.source, t.revision, t.commit_sha, s.transcoder_format, "
            "s.transcoder_file_commits_json, s.status, s.replacement_score, "
            "s.completeness_score, s.pruned_replacement_score, s.pruned_completeness_score "
            "FROM scores s JOIN transcoders t USING (transcoder_id)"
        ).fetchall()
    by_source = {row[0]: row[1:] for row in rows}
    revision, commit, fmt, file_commits, status, *scores = by_source[CONFIG_REPO]
    assert (revision, commit, fmt, status) == (
        "main",
        config_repo.commit_sha,
        "circuit-tracer-hub-config",
        "ok",
    )
    assert json.loads(file_commits) == dict.fromkeys(entries, layers_repo.commit_sha)
    toy_plt = by_source["toy-plt"]
    assert toy_plt[3] is None and toy_plt[4] == "ok"  # its own files name no Hub files
    assert tuple(scores) == tuple(toy_plt[5:])
