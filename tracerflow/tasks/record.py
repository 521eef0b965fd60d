"""Stage 7, record: one write of the whole flow run into the score store.

Idempotent on the flow run id (recording the same run twice adds nothing) and all-or-nothing
(one transaction). Into the embedded file, concurrent flow runs are serialised by the storage
layer's writer lock, an OS file lock that dies with its process (``storage.database``); a
DuckLake takes concurrent writers from many hosts and needs none.
"""

from __future__ import annotations

from collections.abc import Sequence

from prefect import task
from prefect.cache_policies import NO_CACHE

from tracerflow.storage.database import record_run
from tracerflow.storage.metrics import MetricsRecord
from tracerflow.storage.records import RunInfo, ScoreRecord
from tracerflow.storage.store import Store


# Retried: a lake's PostgreSQL may be restarting, a file's lock may be held; the write is
# idempotent on the flow run id, so a retry never records a run twice.
@task(name="record", retries=2, retry_delay_seconds=[1, 5], cache_policy=NO_CACHE)
def record_task(
    store: Store, run: RunInfo, records: list[ScoreRecord], metrics: Sequence[MetricsRecord] = ()
) -> int:
    return record_run(store, run, records, metrics=metrics)
