"""Deployments on a real Prefect server: register twice, trigger, and read what the UI shows."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tests.operate.conftest import home_of
from tracerflow.cli import app
from tracerflow.deploy import WORK_POOL, register
from tracerflow.flows.report import REGRESSION_EVENT
from tracerflow.flows.score import prompt_chunks
from tracerflow.parameters import RunRequest
from tracerflow.presets import run_parameters
from tracerflow.storage.database import record_run
from tracerflow.storage.records import ModelInfo, RunInfo, ScoreRecord, TranscoderInfo
from tracerflow.suites import load_suite

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO / "test-artifacts"


def test_deploy_with_no_server_there_fails_in_one_line(tmp_path):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = CliRunner().invoke(app, ["deploy", "--api-url", f"http://127.0.0.1:{port}/api"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [
        f"error: no Prefect server answers at http://127.0.0.1:{port}/api (ConnectError): start "
        "one with `tracerflow server up`, or pass --api-url"
    ]


def read_deployments(api_url: str) -> dict[str, dict]:
    response = httpx.post(f"{api_url}/deployments/filter", json={}, timeout=30)
    response.raise_for_status()
    return {d["name"]: d for d in response.json()}


def schedules_of(deployment: dict) -> list[tuple[str, str]]:
    return sorted(
        (s["schedule"]["cron"], s["schedule"].get("timezone") or "")
        for s in deployment["schedules"]
    )


def test_registering_twice_yields_the_same_deployments(
    prefect_server, api_url, monkeypatch, tmp_path
):
    monkeypatch.setenv("PREFECT_API_URL", api_url)
    register(REPO / "deployments" / "prefect.yaml", api_url)
    first = read_deployments(api_url)
    # The second time as a user does it; offline with an empty Hugging Face cache, GPT-2 cannot
    # be loaded here, so the gpt2 nightly is flagged and the toy one is not.
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    deployed = CliRunner().invoke(app, ["deploy", "--api-url", api_url])
    second = read_deployments(api_url)

    assert deployed.exit_code == 0, deployed.output
    table = deployed.stdout.splitlines()
    assert table[0].split() == ["deployment", "schedule", "work_pool"]
    assert [line.split()[0] for line in table[2:6]] == [
        "score-suite/toy-nightly", "score-suite/gpt2-16k-nightly",
        "score-suite-transcoder/score-suite-transcoder", "maintain-store/store-maintenance",
    ]  # fmt: skip
    assert "0 2 * * * (UTC)" in table[2] and table[2].endswith(WORK_POOL)
    assert "none" in table[4]  # never scheduled
    (warning,) = deployed.stderr.strip().splitlines()
    assert warning.startswith(
        "warning: score-suite/gpt2-16k-nightly cannot run on a worker like this machine: "
    ), warning
    assert "HF_HUB_OFFLINE" in warning and "cache" in warning, warning

    assert set(first) == {
        "toy-nightly", "gpt2-16k-nightly", "score-suite-transcoder", "store-maintenance"
    }  # fmt: skip
    expected_schedules = {
        "toy-nightly": [("0 2 * * *", "UTC")],
        "gpt2-16k-nightly": [("0 3 * * *", "UTC")],
        "score-suite-transcoder": [],  # started by a fanned-out suite run, never scheduled
        "store-maintenance": [("0 5 * * 0", "UTC")],  # weekly, Sunday 05:00
    }
    for name, deployment in first.items():
        again = second[name]
        assert again["id"] == deployment["id"]
        assert schedules_of(again) == schedules_of(deployment) == expected_schedules[name]
        assert again["work_pool_name"] == WORK_POOL
        assert again["path"] is None  # no checkout path baked in
        if name == "score-suite-transcoder":
            assert again["entrypoint"] == "tracerflow/flows/fan_out.py:suite_transcoder_flow"
            continue
        if name == "store-maintenance":
            assert again["entrypoint"] == "tracerflow/flows/maintenance.py:maintain_store_flow"
            assert again["parameters"] == {"keep_days": 30}
            continue
        assert again["parameters"] == deployment["parameters"] == {"suite": name}
        assert again["entrypoint"] == "tracerflow/flows/suite.py:suite_flow"


def inject_previous_run(home: Path) -> None:
    """A previous run of the toy suite whose scores were far better, on the same prompts with
    the same model and parameters as tonight's run: the next run regresses."""
    suite = load_suite("toy-nightly")

    def params_of(source: str) -> dict:
        # The suite sets no parameters: the preset's.
        return run_parameters(
            source, RunRequest(transcoders=[source], prompts=suite.prompts)
        ).recorded()

    yesterday = datetime.now(UTC) - timedelta(days=1)
    run = RunInfo(
        flow_run_id="injected-previous-run",
        flow_name="score-transcoders",
        deployment_name="toy-nightly",
        suite_name=suite.suite.name,
        started_at=yesterday,
        finished_at=yesterday,
        status="completed",
        tracerflow_version="0",
        circuit_tracer_version="0",
        torch_version="0",
        device="cpu",
        host="test",
    )
    records = [
        ScoreRecord(
            transcoder=TranscoderInfo(
                source=source,
                revision=None,
                commit_sha=None,
                content_hash="old",
                kind="clt",
                n_layers=2,
                d_model=64,
                d_features=256,
                activation="topk",
            ),
            model=ModelInfo(name="toy-gpt2", n_layers=2, d_model=64, d_vocab=512, n_ctx=64),
            prompt=prompt,
            n_tokens=10,
            params=params_of(source),
            status="ok",
            error=None,
            replacement_score=0.999,
            completeness_score=0.999,
            pruned_replacement_score=0.999,
            pruned_completeness_score=0.999,
            n_active_features=1,
            n_selected_features=1,
            n_logits=1,
            logit_cumulative_prob=0.9,
            n_pos=10,
            phase_seconds=None,
            attribution_seconds=1.0,
            peak_memory_bytes=None,
            attribution_threads=1,
            graph_path=None,
            graph_files_path=None,
            slug=None,
            created_at=yesterday,
        )
        for source in suite.suite.transcoders
        for prompt in suite.prompts
    ]
    record_run(home / "scores.duckdb", run, records)


@pytest.mark.slow
def test_triggered_toy_deployment_completes_with_artifacts_and_regression_event(
    prefect_server, api_url, monkeypatch
):
    monkeypatch.setenv("PREFECT_API_URL", api_url)
    register(REPO / "deployments" / "prefect.yaml", api_url)
    inject_previous_run(home_of(prefect_server))
    deployment = read_deployments(api_url)["toy-nightly"]
    created = httpx.post(
        f"{api_url}/deployments/{deployment['id']}/create_flow_run", json={}, timeout=30
    )
    created.raise_for_status()
    suite_run_id = created.json()["id"]

    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", WORK_POOL, "--run-once"],
        env=prefect_server,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert worker.returncode == 0, worker.stdout[-3000:] + worker.stderr[-3000:]

    runs = httpx.post(f"{api_url}/flow_runs/filter", json={}, timeout=30).json()
    by_id = {run["id"]: run for run in runs}
    assert by_id[suite_run_id]["state_type"] == "COMPLETED", by_id[suite_run_id]["state"]
    (scores_run,) = [
        r for r in runs if r.get("parent_task_run_id") and r["name"] == "toy-nightly-scores"
    ]
    assert scores_run["state_type"] == "COMPLETED"

    artifacts = httpx.post(
        f"{api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [scores_run["id"]]}}},
        timeout=30,
    ).json()
    by_key = {artifact["key"]: artifact for artifact in artifacts if artifact["key"]}
    assert by_key["scores"]["type"] == "table"
    table = json.loads(by_key["scores"]["data"])
    suite = load_suite("toy-nightly")
    assert len(table) == len(suite.suite.transcoders) * len(suite.prompts)
    assert {row["status"] for row in table} == {"ok"}
    # One attribution progress per chunk of prompts and one evaluate progress per transcoder
    # (unkeyed), one dashboards progress (keyed) per transcoder.
    progress = [a for a in artifacts if a["type"] == "progress" and not a["key"]]
    n_chunks = len(suite.suite.transcoders) * len(prompt_chunks(suite.prompts))
    n_evaluations = len(suite.suite.transcoders)  # one evaluate task per transcoder
    assert len(progress) == n_chunks + n_evaluations
    assert all(a["data"] == 100.0 for a in progress)
    dashboards = [a for a in artifacts if a["type"] == "progress" and a["key"]]
    assert len(dashboards) == len(suite.suite.transcoders)
    assert all(a["key"].startswith("dashboards-tracerflow-") for a in dashboards)
    assert all(a["data"] == 100.0 for a in dashboards)
    quality = json.loads(by_key["transcoder-metrics"]["data"])
    assert sorted(row["transcoder_source"] for row in quality) == sorted(suite.suite.transcoders)
    # One markdown artifact lists every graph as a link "- [text](url)" to the viewer.
    links = [line for line in by_key["graphs"]["data"].splitlines() if line.startswith("- [")]
    assert len(links) == len(table)
    assert all("](http://127.0.0.1:8041/graph.html?slug=" in link for link in links)
    summary = by_key["summary"]["data"]
    assert "**Regression:** `toy-clt`" in summary
    assert "## Transcoder quality" in summary and "| toy-clt | eval-corpus.txt | 4103 |" in summary
    # The suite's run, the one the UI lists, carries the same summary.
    (on_suite,) = httpx.post(
        f"{api_url}/artifacts/filter",
        json={"artifacts": {"flow_run_id": {"any_": [suite_run_id]}, "key": {"any_": ["summary"]}}},
        timeout=30,
    ).json()
    assert on_suite["data"] == summary

    # The server persists events asynchronously: poll briefly for them.
    expected = set(load_suite("toy-nightly").suite.transcoders)
    regressed: set[str] = set()
    deadline = time.monotonic() + 60
    while regressed != expected and time.monotonic() < deadline:
        events = httpx.post(
            f"{api_url}/events/filter",
            json={"filter": {"event": {"name": [REGRESSION_EVENT]}}},
            timeout=30,
        ).json()["events"]
        regressed = {event["payload"]["transcoder"] for event in events}
        time.sleep(0.5)
    assert regressed == expected

    screenshot_scores_table(api_url, scores_run["id"], artifacts)


def screenshot_scores_table(api_url: str, flow_run_id: str, artifacts: list[dict]) -> None:
    """The Prefect UI page of the run's scores table, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    ui = api_url.removesuffix("/api")
    # The scores table by its key: the run also has the transcoder-metrics table.
    table = next(a for a in artifacts if a["type"] == "table" and a["key"] == "scores")
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{ui}/artifacts/artifact/{table['id']}", wait_until="networkidle")
            page.get_by_text("replacement_score").first.wait_for(timeout=60_000)
            page.get_by_text("toy-clt").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS_DIR / "prefect-ui-scores-table.png"), full_page=True)
            page.goto(f"{ui}/runs/flow-run/{flow_run_id}", wait_until="networkidle")
            page.get_by_text("toy-nightly-scores").first.wait_for(timeout=60_000)
            page.screenshot(path=str(ARTIFACTS_DIR / "prefect-ui-flow-run.png"), full_page=True)
        finally:
            browser.close()
