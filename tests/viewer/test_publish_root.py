"""Every graph from every host: a run publishes into ``$TRACERFLOW_PUBLISH_ROOT`` and records
into a lake; ``tracerflow view`` on another host (another home, the same root and lake) serves
that run's graphs, its feature packs and its scores, read from the lake.

Host A is a copy of the shared demo home, so its re-run finds every stage in its store (the one
flow run of this change, cheap): what it adds is the publishing and the lake's rows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.request import urlopen

import pytest

from tests.postgres import PostgresServer
from tests.viewer.conftest import REPO_ROOT, DemoScore, run_viewer
from tracerflow.dashboards.pack import INDEX_FILE, current_pack_dir
from tracerflow.storage.queries import run_sql
from tracerflow.storage.store import LakeStore
from tracerflow.viewer.features import FEATURES_DIR
from tracerflow.viewer.graph_ids import GRAPH_METADATA_FILE


def demo_on_host(home: Path, team_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``tracerflow demo`` on a host whose home is ``home``, with the team's settings."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        **team_env,
        "PYTHONPATH": str(REPO_ROOT),
        "TRACERFLOW_HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    return subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def fetch(url: str) -> bytes:
    with urlopen(url, timeout=30) as response:
        assert response.status == 200, url
        return response.read()


@pytest.mark.slow
def test_a_second_host_serves_the_first_hosts_graphs_with_their_lake_scores(
    demo_home: Path,
    demo_scores: dict[str, DemoScore],
    postgres: PostgresServer,
    tmp_path: Path,
) -> None:
    (tmp_path / "lake-data").mkdir()
    lake = LakeStore(
        postgres.create_database(f"publish_{uuid.uuid4().hex[:12]}"), tmp_path / "lake-data"
    )
    root = tmp_path / "published"
    team_env = {
        "TRACERFLOW_PUBLISH_ROOT": str(root),
        "TRACERFLOW_STORE": lake.url,
        "TRACERFLOW_LAKE_DATA_PATH": str(lake.data_path),
    }
    host_a = tmp_path / "host-a"
    shutil.copytree(demo_home, host_a, symlinks=True)
    result = demo_on_host(host_a, team_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # Host A published its graphs, their index and its feature packs into the root.
    published = json.loads((root / GRAPH_METADATA_FILE).read_text())["graphs"]
    assert sorted(entry["slug"] for entry in published) == sorted(demo_scores)
    scans = {entry["scan"] for entry in published}
    assert len(scans) == 2
    packs = {scan: current_pack_dir(root / FEATURES_DIR / scan) for scan in scans}
    for scan, files in packs.items():  # a pack is versioned: CURRENT names its files' folder
        assert files is not None and (files / INDEX_FILE).is_file(), scan
    lake_scores = {
        slug: (replacement, completeness)
        for slug, replacement, completeness in run_sql(
            lake,
            "SELECT slug, replacement_score, completeness_score FROM scores_wide"
            " WHERE status = 'ok'",
        )[1]
    }
    # The lake holds the scores the demo computed (its re-run read every stage from the store).
    assert lake_scores == {
        slug: (score.replacement_score, score.completeness_score)
        for slug, score in demo_scores.items()
    }

    # Host B: its own empty home; the root and the lake found through its settings alone.
    host_b = tmp_path / "host-b"
    host_b.mkdir()
    with run_viewer(
        root, pass_graph_dir=False, env={**team_env, "TRACERFLOW_HOME": str(host_b)}
    ) as viewer:
        metadata = json.loads(fetch(f"{viewer.url}data/{GRAPH_METADATA_FILE}"))["graphs"]
        served = {
            graph["slug"]: (graph["replacement_score"], graph["completeness_score"])
            for graph in metadata
        }
        assert served == lake_scores
        assert {graph["transcoder_label"] for graph in metadata} == {"toy-clt", "toy-plt"}
        index_page = fetch(viewer.url).decode()
        for slug in demo_scores:
            assert f"slug={slug}" in index_page, slug
            graph_file = fetch(f"{viewer.url}graph_data/{slug}.json")
            assert graph_file == (root / f"{slug}.json").read_bytes()
        for scan in scans:
            pack_index = fetch(f"{viewer.url}features/{scan}/{INDEX_FILE}")
            assert pack_index == (packs[scan] / INDEX_FILE).read_bytes()  # type: ignore[operator]
    assert not (host_b / "graph-files").exists()
