"""The suite flow: run ``score_flow`` for one suite file, tagged with the suite's name.

This is what the scheduled deployments run (``deployments/prefect.yaml``). The suite may ask for
a Dask task runner, which fans transcoders × prompts out over worker processes (one per GPU in a
real deployment); each worker assembles its model once, and the DuckDB write still happens once,
at the end, in the flow's own process.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from prefect import flow, tags
from prefect.task_runners import ThreadPoolTaskRunner

from tracerflow.flows.score import score_flow
from tracerflow.flows.validation import suite_request
from tracerflow.suites import TaskRunnerSpec, load_suite


def task_runner_for(spec: TaskRunnerSpec) -> Any:
    if spec.kind == "sequential":
        return ThreadPoolTaskRunner(max_workers=1)
    from prefect_dask import DaskTaskRunner

    if spec.address:
        return DaskTaskRunner(address=spec.address)
    return DaskTaskRunner(
        cluster_kwargs={"n_workers": spec.workers, "threads_per_worker": 1, "processes": True}
    )


@flow(name="score-suite", log_prints=True)
def suite_flow(suite: str = "toy-nightly", dask_workers: int | None = None) -> list[dict[str, Any]]:
    """Score a suite (a built-in suite name or a path to a suite YAML file).

    ``dask_workers`` overrides the suite's task runner with a local Dask cluster of that size.
    """
    loaded = load_suite(suite)
    spec = loaded.suite.task_runner
    if dask_workers:
        spec = TaskRunnerSpec(kind="dask", workers=dask_workers)
    with tags(f"suite:{loaded.suite.name}"):
        return score_flow.with_options(
            task_runner=task_runner_for(spec), flow_run_name=f"{loaded.suite.name}-scores"
        )(
            **asdict(suite_request(loaded)),
            suite_name=loaded.suite.name,
            regression_margin=loaded.suite.regression_margin,
        )
