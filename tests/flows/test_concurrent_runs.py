"""Four flow runs of the same two transcoders started at once, in separate processes, on one
artifact root and one lake (DuckLake on PostgreSQL): every run completes and every row lands
once (issue 27: two runs of one transcoder sharing ``TRACERFLOW_ARTIFACT_ROOT`` broke the
dashboards stage, one reading a feature pack while the other replaced it).

Two homes, two runs in each, two prompts: each pair of runs with one prompt computes the same
attribute, score and export keys at once, from two homes (the store's key locks); each home's two
prompts want different features, so the one shared dashboards folder grows under runs of both
homes, and each home's published pack is swapped while its other run publishes too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.postgres import PostgresServer
from tracerflow.dashboards.pack import graph_file_features, read_feature_pack
from tracerflow.storage.database import reading
from tracerflow.storage.store import LakeStore
from tracerflow.toy.grammar import sample_sentences

PROMPTS = [
    "Mary and John went to the store, John gave a drink to",
    "When Alice and Bob went to the park, Bob gave a ball to",
]
TRANSCODERS = ["toy-clt", "toy-plt"]


@pytest.mark.slow
def test_four_concurrent_runs_of_the_same_transcoders_share_one_lake(
    tmp_path: Path, prefect_api: None, postgres: PostgresServer
) -> None:
    from prefect.settings import PREFECT_API_URL

    (tmp_path / "lake-data").mkdir()
    lake = LakeStore(
        postgres.create_database(f"concurrent_{uuid.uuid4().hex[:12]}"), tmp_path / "lake-data"
    )

    corpus = tmp_path / "corpus.jsonl"  # a few sentences: the dashboards stage stays cheap
    sentences = sample_sentences(8, held_out=True, seed=3)
    corpus.write_text("".join(json.dumps({"text": s.text}) + "\n" for s in sentences))
    homes = [tmp_path / "home-a", tmp_path / "home-b"]
    shared = {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "PREFECT_API_URL": PREFECT_API_URL.value(),
        "TRACERFLOW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TRACERFLOW_STORE": lake.url,
        "TRACERFLOW_LAKE_DATA_PATH": str(lake.data_path),
    }
    runs = [(homes[i % 2], PROMPTS[i // 2]) for i in range(4)]  # (a, P0) (b, P0) (a, P1) (b, P1)
    transcoder_args = [arg for source in TRANSCODERS for arg in ("--transcoder", source)]
    command = [sys.executable, "-m", "tracerflow.cli", "run", *transcoder_args]
    options = ["--corpus", str(corpus), "--eval-tokens", "64"]
    processes = [
        subprocess.Popen(
            [*command, "--prompt", prompt, *options],
            env={**shared, "TRACERFLOW_HOME": str(home)},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for home, prompt in runs
    ]
    outputs = [process.communicate(timeout=900)[0] for process in processes]
    for process, output in zip(processes, outputs, strict=True):
        assert process.returncode == 0, output[-3000:]

    with reading(lake) as con:
        runs_recorded = con.execute("SELECT count(*) FROM runs").fetchone()[0]
        rows = con.execute(
            "SELECT flow_run_id, transcoder_source, prompt, status FROM scores_wide"
        ).fetchall()
    assert runs_recorded == 4
    assert len({row[0] for row in rows}) == 4  # each run's rows, once each
    assert sorted(row[1:] for row in rows) == sorted(
        (source, prompt, "ok") for source in TRANSCODERS for prompt in PROMPTS for _ in range(2)
    )
    # Each graph leads to a whole pack holding its features, in its own home.
    for home in homes:
        graphs = [p for p in (home / "graph-files").glob("*.json") if p.stem != "graph-metadata"]
        assert len(graphs) == len(TRANSCODERS) * len(PROMPTS)
        for graph in graphs:
            scan = json.loads(graph.read_text())["metadata"]["scan"]
            published = home / "graph-files" / "features" / scan
            assert graph_file_features(graph) <= set(read_feature_pack(published))  # decodes
    # One store folder per transcoder, holding the features of every run's graphs.
    stored = [p for p in (tmp_path / "artifacts" / "dashboards").iterdir() if p.is_dir()]
    assert len(stored) == len(TRANSCODERS)
