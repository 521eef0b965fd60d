"""A suite fanned out over a work pool: each transcoder its own child flow run, so workers on
several machines split the suite.

The parent (``suite_flow`` with ``fan_out``) starts one run of the ``score-suite-transcoder``
deployment per transcoder (``run_deployment``, linked to the parent as subflows so the UI shows
the tree), waits for all of them, and fails naming the children that failed. Each child scores
its transcoder on the suite's prompts and records its own run under the suite's name. Workers
share the score store (a DuckLake: many writers) and the artifact root (a shared folder), so a
child's work lands in one history and is reused by whichever worker runs it next.
"""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, tags
from prefect.artifacts import create_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.flow_runs import wait_for_flow_run
from prefect.runtime import flow_run
from prefect.utilities.asyncutils import run_coro_as_sync

from tracerflow.errors import ConfigError, TracerflowError
from tracerflow.flows.report import carry_summaries, carrying_summary
from tracerflow.flows.score import score_flow
from tracerflow.flows.validation import suite_request
from tracerflow.settings import configure_prefect_defaults, get_settings
from tracerflow.storage.store import FileStore
from tracerflow.suites import LoadedSuite, load_suite

# This module is an entrypoint of deployments/prefect.yaml, which a worker loads, without the
# CLI, into a process that has imported Prefect already (its settings are the worker's): here,
# the one place a flow module sets tracerflow's Prefect defaults, they reach the processes the
# flow starts (a Dask cluster's workers). Imported by the CLI, it finds them set already.
configure_prefect_defaults()

# The deployment each child runs (deployments/prefect.yaml): <flow name>/<deployment name>.
CHILD_DEPLOYMENT = "score-suite-transcoder/score-suite-transcoder"
# How long the parent waits for its children before failing (the nightly GPT-2 suite takes ~1 h).
CHILD_TIMEOUT_S = 6 * 3600


@flow(name="score-suite-transcoder", log_prints=True)
def suite_transcoder_flow(suite: str, transcoder: str) -> list[dict[str, Any]]:
    """One transcoder of a suite: the child run a fanned-out suite starts on the work pool."""
    loaded = load_suite(suite)
    if transcoder not in loaded.suite.transcoders:
        raise ConfigError(
            f"suite {loaded.suite.name} has no transcoder {transcoder!r} "
            f"(it has: {', '.join(loaded.suite.transcoders)})"
        )
    request = suite_request(loaded).model_copy(update={"transcoders": [transcoder]})
    with tags(f"suite:{loaded.suite.name}"):
        state = score_flow.with_options(flow_run_name=f"{loaded.suite.name}-{transcoder}-scores")(
            request,
            suite_name=loaded.suite.name,
            regression_margin=loaded.suite.regression_margin,
            return_state=True,
        )
    # This child's run carries its scoring run's summary, so the suite's run can carry them all.
    return carrying_summary(state)


def fan_out_suite(suite: str, loaded: LoadedSuite) -> list[dict[str, Any]]:
    """Start one child run per transcoder on the work pool, wait for all; one row per child."""
    logger = get_run_logger()
    if isinstance(get_settings().score_store, FileStore):
        logger.warning(
            "fanning out with the embedded score file: workers on other machines cannot write "
            "it; set TRACERFLOW_STORE to a ducklake:postgres: store (docs/operations.md)"
        )
    parent = flow_run.get_id()
    children: list[FlowRun] = [
        run_deployment(
            CHILD_DEPLOYMENT,
            parameters={"suite": suite, "transcoder": transcoder},
            flow_run_name=f"{loaded.suite.name}-{transcoder}",
            timeout=0,  # start them all, then wait
            as_subflow=True,
            # A retried parent finds the children it started instead of starting them again.
            idempotency_key=f"{parent}:{transcoder}" if parent else None,
            tags=[f"suite:{loaded.suite.name}"],
        )
        for transcoder in loaded.suite.transcoders
    ]
    logger.info("started %d child runs on the work pool", len(children))
    finished = run_coro_as_sync(_wait_for_all([child.id for child in children]))
    rows = [
        {
            "transcoder": transcoder,
            "flow_run": run.name,
            "flow_run_id": str(run.id),
            "state": run.state.name if run.state else "unknown",
        }
        for transcoder, run in zip(loaded.suite.transcoders, finished, strict=True)
    ]
    create_table_artifact(
        key="fan-out", table=rows, description=f"child runs of suite {loaded.suite.name}"
    )
    carry_summaries([run.id for run in finished])
    failed = [row for row in rows if row["state"] != "Completed"]
    if failed:
        raise TracerflowError(
            f"{len(failed)} of {len(rows)} child runs did not complete: "
            + ", ".join(f"{row['transcoder']} ({row['state']})" for row in failed)
        )
    return rows


async def _wait_for_all(ids: list[UUID]) -> list[FlowRun]:
    return list(await asyncio.gather(*(wait_for_flow_run(i, timeout=CHILD_TIMEOUT_S) for i in ids)))
