"""Fan-out: the toy suite on a 2-worker Dask LocalCluster gives the sequential run's scores."""

from __future__ import annotations

import pytest
from prefect_dask import DaskTaskRunner

from tracerflow.flows.score import score_flow
from tracerflow.parameters import RunRequest
from tracerflow.presets import builtin_prompts


@pytest.mark.slow
def test_dask_fan_out_gives_the_same_scores(home, tmp_path, monkeypatch):
    prompts = builtin_prompts()[:3]
    transcoders = ["toy-clt", "toy-plt"]
    request = RunRequest(transcoders=transcoders, prompts=prompts)
    sequential = score_flow(request)

    monkeypatch.setenv("TRACERFLOW_HOME", str(tmp_path / "dask-home"))  # nothing cached
    runner = DaskTaskRunner(
        cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": True}
    )
    fanned_out = score_flow.with_options(task_runner=runner)(request)

    def scores(rows):
        return sorted(
            (
                r["transcoder_source"],
                r["prompt"],
                r["replacement_score"],
                r["completeness_score"],
                r["pruned_replacement_score"],
                r["pruned_completeness_score"],
            )
            for r in rows
        )

    assert len(fanned_out) == len(transcoders) * len(prompts)
    assert scores(fanned_out) == scores(sequential)
