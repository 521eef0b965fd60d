"""Stage 7, record: one write of the whole flow run into the score store.

Idempotent on the flow run id (recording the same run twice adds nothing) and all-or-nothing
(one transaction). Into the embedded file, concurrent flow runs are serialised by a file lock in
the storage layer and, where a Prefect server is in use, by the global concurrency limit below;
a DuckLake takes concurrent writers from many hosts and needs neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from tracerflow.storage.database import record_run
from tracerflow.storage.metrics import MetricsRecord
from tracerflow.storage.records import RunInfo, ScoreRecord
from tracerflow.storage.store import FileStore, Store

# Name of the Prefect global concurrency limit that guards the DuckDB writer (one slot).
DATABASE_WRITE_LIMIT = "tracerflow-duckdb-writer"


def _concurrency_guard(use_server_limit: bool) -> AbstractContextManager[Any]:
    """A one-slot Prefect global concurrency limit around the write, created on first use."""
    if not use_server_limit:
        return nullcontext()
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency

    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(DATABASE_WRITE_LIMIT, limit=1)
    return concurrency(DATABASE_WRITE_LIMIT, occupy=1, timeout_seconds=600, strict=True)


# Retried: a lake's PostgreSQL may be restarting, a file's lock may be held; the write is
# idempotent on the flow run id, so a retry never records a run twice.
@task(name="record", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def record_task(
    store: Store,
    run: RunInfo,
    records: list[ScoreRecord],
    use_server_limit: bool = False,
    metrics: Sequence[MetricsRecord] = (),
) -> int:
    guard = _concurrency_guard(use_server_limit and isinstance(store, FileStore))
    return record_run(store, run, records, guard=guard, metrics=metrics)
