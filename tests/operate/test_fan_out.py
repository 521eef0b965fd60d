"""A suite fanned out across machines: one Prefect server on PostgreSQL, two `prefect worker`
processes with their own TRACERFLOW_HOMEs sharing an artifact root and a DuckLake store, and a
suite of three toy transcoders. Both workers take runs, every row lands once, and the API (what
the UI shows) has the parent run and its three children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.operate.conftest import free_port
from tests.postgres import PostgresServer
from tracerflow import server
from tracerflow.deploy import WORK_POOL, register
from tracerflow.settings import Settings
from tracerflow.storage import queries
from tracerflow.storage.store import LakeStore
from tracerflow.suites import load_suite

REPO = Path(__file__).resolve().parents[2]
SUITE = "toy-nightly"  # three toy transcoders: CLT, PLT, JumpReLU CLT


@pytest.fixture(scope="module")
def team(postgres: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """The team's shared pieces: a Prefect server on PostgreSQL, a lake, an artifact root."""
    folder = tmp_path_factory.mktemp("team")
    settings = Settings(home=folder / "server-home")
    postgres.create_database("prefect_fan_out")
    database = postgres.sqlalchemy_url("prefect_fan_out")
    started = server.up(settings, port=free_port(), timeout=180, database=database)
    assert started.healthy and started.api_url
    (folder / "lake-data").mkdir()  # the shared folder every worker mounts
    lake = LakeStore(postgres.create_database("lake_fan_out"), folder / "lake-data")
    try:
        yield {
            "api_url": started.api_url,
            "lake": lake,
            "artifact_root": folder / "shared-artifacts",
            "folder": folder,
        }
    finally:
        server.down(settings)


def worker_env(team: dict, name: str) -> dict[str, str]:
    home = team["folder"] / f"worker-{name}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "PREFECT_API_URL": team["api_url"],
        "PREFECT_HOME": str(home / "prefect"),
        "TRACERFLOW_HOME": str(home),
        "TRACERFLOW_ARTIFACT_ROOT": str(team["artifact_root"]),
        "TRACERFLOW_STORE": team["lake"].url,
        "TRACERFLOW_LAKE_DATA_PATH": str(team["lake"].data_path),
        "TRACERFLOW_THREADS": "1",
        # Poll the pool every second (default 10 s): the test waits on the workers' pickup.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
    }
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL", None)
    return env


def flow_runs(api_url: str) -> list[dict]:
    response = httpx.post(f"{api_url}/flow_runs/filter", json={}, timeout=30)
    response.raise_for_status()
    return response.json()


@pytest.mark.slow
def test_a_suite_fans_out_over_two_workers_into_one_lake(team: dict) -> None:
    api_url = team["api_url"]
    register(REPO / "deployments" / "prefect.yaml", api_url)
    deployments = httpx.post(f"{api_url}/deployments/filter", json={}, timeout=30).json()
    parent_deployment = next(d for d in deployments if d["name"] == SUITE)

    # Each worker runs at most two flow runs at once: four runs (the parent and three
    # children) cannot all go to one worker, so both take runs.
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL,
             "--limit", "2", "--name", f"worker-{name}"],
            env=worker_env(team, name),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for name in ("a", "b")
    ]  # fmt: skip
    try:
        created = httpx.post(
            f"{api_url}/deployments/{parent_deployment['id']}/create_flow_run",
            json={"parameters": {"suite": SUITE, "fan_out": True}},
            timeout=30,
        )
        created.raise_for_status()
        parent_id = created.json()["id"]
        parent = wait_until_final(api_url, parent_id, timeout_s=900)
    finally:
        logs = stop(workers)
    assert parent["state_type"] == "COMPLETED", (parent["state"], logs[-6000:])

    transcoders = load_suite(SUITE).suite.transcoders
    prompts = load_suite(SUITE).prompts
    runs = flow_runs(api_url)
    child_names = {f"{SUITE}-{transcoder}" for transcoder in transcoders}
    children = [run for run in runs if run["name"] in child_names]
    assert sorted(run["name"] for run in children) == sorted(child_names)
    assert all(run["state_type"] == "COMPLETED" for run in children)
    # The UI's tree: every child hangs off a task run of the parent.
    for child in children:
        task_run = httpx.get(f"{api_url}/task_runs/{child['parent_task_run_id']}", timeout=30)
        assert task_run.json()["flow_run_id"] == parent_id

    # Every row once: one run per child in the lake, each with its transcoder's prompts.
    lake: LakeStore = team["lake"]
    per_run = queries.run_sql(
        lake,
        "SELECT transcoder_source, count(*), count(DISTINCT score_id), count(DISTINCT flow_run_id)"
        " FROM scores_wide GROUP BY 1 ORDER BY 1",
    )[1]
    assert per_run == [(t, len(prompts), len(prompts), 1) for t in sorted(transcoders)]
    assert queries.run_sql(lake, "SELECT count(*) FROM transcoders")[1] == [(len(transcoders),)]
    # Both workers took runs: each wrote graph files under its own home. The rows store them
    # relative to the home (each host resolves them under its own).
    stored = queries.run_sql(
        lake, "SELECT DISTINCT starts_with(graph_files_path, 'graph-files/') FROM scores"
    )[1]
    assert stored == [(True,)]
    slugs = [slug for (slug,) in queries.run_sql(lake, "SELECT slug FROM scores")[1]]
    homes = {
        name
        for name in ("worker-a", "worker-b")
        for slug in slugs
        if (team["folder"] / name / "graph-files" / f"{slug}.json").is_file()
    }
    assert homes == {"worker-a", "worker-b"}
    # The suite's run (the one the UI lists) carries its children's summaries, one after another.
    (summary,) = httpx.post(
        f"{api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [parent_id]}, "key": {"any_": ["summary"]}}},
        timeout=30,
    ).json()
    assert summary["data"].count("# Scores of suite") == len(transcoders)
    # The artifact root is shared: every child's stage outputs are under it.
    assert (team["artifact_root"] / "attribute").is_dir()
    assert not (team["folder"] / "worker-a" / "artifacts").exists()


def wait_until_final(api_url: str, flow_run_id: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        run = httpx.get(f"{api_url}/flow_runs/{flow_run_id}", timeout=30).json()
        if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(1)
    raise AssertionError(f"flow run {flow_run_id} did not finish within {timeout_s:.0f} s")


def stop(workers: list[subprocess.Popen[str]]) -> str:
    """Stop the workers (their whole process groups); return what they printed."""
    for worker in workers:
        os.killpg(worker.pid, signal.SIGTERM)
    output = ""
    for worker in workers:
        try:
            output += worker.communicate(timeout=60)[0] or ""
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
            output += worker.communicate()[0] or ""
    return output
