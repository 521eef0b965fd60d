"""The suite flow: run ``score_flow`` for one suite file, tagged with the suite's name.

This is what the scheduled deployments run (``deployments/prefect.yaml``). Two ways to spread a
suite: a Dask task runner fans transcoders × prompts out over worker processes of one run (one
per GPU in a real deployment; the write still happens once, at the end, in the flow's own
process), and ``fan_out`` makes each transcoder its own child flow run on the work pool, so
workers on several machines split the suite (``fan_out.py``).
"""

from __future__ import annotations

from typing import Any

from prefect import flow, tags
from prefect.task_runners import ThreadPoolTaskRunner

from tracerflow.flows.report import carrying_summary
from tracerflow.flows.score import score_flow
from tracerflow.flows.validation import suite_request
from tracerflow.settings import configure_prefect_defaults
from tracerflow.suites import TaskRunnerSpec, load_suite

# This module is an entrypoint of deployments/prefect.yaml, which a worker loads, without the
# CLI, into a process that has imported Prefect already (its settings are the worker's): here,
# the one place a flow module sets tracerflow's Prefect defaults, they reach the processes the
# flow starts (a Dask cluster's workers). Imported by the CLI, it finds them set already.
configure_prefect_defaults()


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
def suite_flow(
    suite: str = "toy-nightly", dask_workers: int | None = None, fan_out: bool | None = None
) -> list[dict[str, Any]]:
    """Score a suite (a built-in suite name or a path to a suite YAML file).

    ``dask_workers`` overrides the suite's task runner with a local Dask cluster of that size.
    ``fan_out`` (default: the suite's ``fan_out``) runs each transcoder as a child flow run on
    the work pool instead; the suite file must then be readable by every worker (a built-in
    suite, or a path on a shared folder).
    """
    loaded = load_suite(suite)
    if loaded.suite.fan_out if fan_out is None else fan_out:
        from tracerflow.flows.fan_out import fan_out_suite

        return fan_out_suite(suite, loaded)
    spec = loaded.suite.task_runner
    if dask_workers:
        spec = TaskRunnerSpec(kind="dask", workers=dask_workers)
    with tags(f"suite:{loaded.suite.name}"):
        state = score_flow.with_options(
            task_runner=task_runner_for(spec), flow_run_name=f"{loaded.suite.name}-scores"
        )(
            suite_request(loaded),
            suite_name=loaded.suite.name,
            regression_margin=loaded.suite.regression_margin,
            return_state=True,
        )
    # The suite's own run (the one the UI lists) carries its scoring run's summary too.
    return carrying_summary(state)
