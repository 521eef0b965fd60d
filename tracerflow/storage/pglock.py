"""PostgreSQL advisory locks on a lake's catalog database, taken through DuckDB's postgres
extension (no other PostgreSQL driver).

A transaction-level advisory lock (``pg_try_advisory_xact_lock``) is held by the PostgreSQL
session of one DuckDB transaction and released when that transaction ends or its session dies:
a process killed while holding one never leaves it held. Each purpose has its own key, so
holders of different locks never wait for each other.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator

import duckdb

from tracerflow.errors import StoreBusyError

# One key per purpose (bigints; the catalog database is tracerflow's alone). Another lock on the
# catalog (the writers') must use another key.
SCHEMA_LOCK_KEY = 7_425_100_001  # moving a lake's schema forward (create or migrate)
MAINTENANCE_LOCK_KEY = 7_425_100_002  # `tracerflow store maintain`
LOCK_ALIAS = "tracerflow_catalog_lock"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@contextlib.contextmanager
def catalog_lock(
    con: duckdb.DuckDBPyConnection, conninfo: str, key: int, timeout_s: float, purpose: str
) -> Iterator[None]:
    """Hold the advisory lock ``key`` on the PostgreSQL database ``conninfo`` names while the
    block runs. ``con`` is a DuckDB connection with the postgres extension loaded that this
    function may attach to (and that holds the lock's transaction: use it for nothing else).
    Polls (jittered, 20 ms to 0.5 s) for up to ``timeout_s``, then ``StoreBusyError`` (exit 1:
    a later try may work) naming ``purpose``. The caller masks a driver's error, which may name
    a password."""
    con.execute(f"ATTACH {_quote(conninfo)} AS {LOCK_ALIAS} (TYPE postgres, READ_ONLY)")
    query = (
        f"SELECT * FROM postgres_query('{LOCK_ALIAS}', "
        f"'SELECT pg_try_advisory_xact_lock({int(key)}) AS taken')"
    )
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    con.execute("BEGIN TRANSACTION")
    try:
        while not con.execute(query).fetchone()[0]:  # type: ignore[index]
            if time.monotonic() + delay > deadline:
                raise StoreBusyError(
                    f"another tracerflow process has been {purpose} for more than "
                    f"{timeout_s:.0f} s (it holds the catalog's advisory lock {key}); try again "
                    "when it finishes"
                )
            time.sleep(delay * random.uniform(0.5, 1.5))
            delay = min(delay * 2, 0.5)
        yield
    finally:
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")  # ends the PostgreSQL transaction: the lock goes with it
