"""What the reliability tests share: run the scoring flow on the toy CLT in a home, read its
rows, damage files, and check that an ok row reproduces from the files it points at."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from tracerflow.flows.score import score_flow
from tracerflow.machine import torch_threads
from tracerflow.parameters import RunRequest
from tracerflow.storage.graphs import load_graph
from tracerflow.tasks.score import score_graph

PROMPTS = ["Mary and John went to the store, John gave a drink to", "The cat sat on the"]
TOY = "toy-clt"
NODE_THRESHOLD, EDGE_THRESHOLD = 0.8, 0.98  # the toy preset's
THREADS = 1


@dataclass(frozen=True)
class Row:
    prompt: str
    status: str
    error: str | None
    graph_path: str | None
    graph_files_path: str | None
    slug: str | None
    scores: tuple[float, float, float, float] | None


def run(home: Path, prompts: list[str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Row]:
    """Score ``prompts`` with the toy CLT in ``home``; the run's rows by prompt."""
    monkeypatch.setenv("TRACERFLOW_HOME", str(home))
    request = RunRequest(transcoders=[TOY], prompts=prompts, threads=THREADS)
    state = score_flow(request, return_state=True)
    run_id = str(state.state_details.flow_run_id)
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT prompt, status, error, graph_path, graph_files_path, slug, replacement_score, "
            "completeness_score, pruned_replacement_score, pruned_completeness_score "
            "FROM scores_wide WHERE flow_run_id = ?",
            [run_id],
        ).fetchall()
    result = {}
    for prompt, status, error, graph_path, files_path, slug, *scores in rows:
        numbers = tuple(scores) if status == "ok" else None
        result[prompt] = Row(prompt, status, error, graph_path, files_path, slug, numbers)  # type: ignore[arg-type]
    return result


def task_states(flow_run_id: Any) -> dict[str, list[str]]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    states: dict[str, list[str]] = {}
    for task_run in runs:
        states.setdefault(task_run.name.rsplit("-", 1)[0], []).append(task_run.state.name)
    return states


def assert_reproduces(row: Row, home: Path) -> None:
    """An ok row whose graph and graph file are in ``home`` and give its scores again."""
    assert row.status == "ok", row.error
    assert row.graph_path is not None and row.graph_files_path is not None
    assert Path(row.graph_path).is_relative_to(home) and Path(row.graph_path).is_file()
    assert Path(row.graph_files_path).is_relative_to(home)
    graph = load_graph(Path(row.graph_path).parent)
    with torch_threads(THREADS):  # the flow scores at the graph's thread count
        scores = score_graph(graph, NODE_THRESHOLD, EDGE_THRESHOLD)
    assert row.scores == (
        scores.replacement_score,
        scores.completeness_score,
        scores.pruned_replacement_score,
        scores.pruned_completeness_score,
    )
    assert Path(row.graph_files_path).read_text().strip()


def damage(path: Path, how: str) -> None:
    """Cut ``path`` in half, delete it, or fill it with random bytes of the same size."""
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "deleted":
        path.unlink()
    elif how == "random":
        path.write_bytes(os.urandom(max(path.stat().st_size, 64)))
    else:
        raise ValueError(how)


def stage_folder(home: Path, stage: str) -> Path:
    (folder,) = (home / "artifacts" / stage).iterdir()
    return folder


def run_cli(
    arguments: list[str], home: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``tracerflow run <arguments>`` in a fresh interpreter, in ``home``, reporting to the
    session's Prefect API; offline, unless ``env`` (the process's environment) says otherwise."""
    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        **(env or {}),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        "TRACERFLOW_HOME": str(home),
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
    }
    return subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "run", *arguments],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
