"""The maintenance task's flow run on the configured store. Its deployment (weekly, on the
work pool) is registered with the others by `tracerflow deploy`: tests/operate/test_deployments.py
checks it there."""

from __future__ import annotations

from pathlib import Path

import duckdb

from tests.storage.builders import populate
from tracerflow.flows.maintenance import maintain_store_flow
from tracerflow.storage import queries


def test_the_maintenance_flow_maintains_the_configured_store(home: Path, monkeypatch) -> None:
    store = home / "scores.duckdb"
    home.mkdir(parents=True)
    populate(store, nights=1)
    con = duckdb.connect(str(store))  # a write left in the write-ahead log
    con.execute("PRAGMA disable_checkpoint_on_shutdown")
    con.execute("UPDATE runs SET host = 'noted'")
    con.close()
    history = queries.history(store)
    monkeypatch.setenv("TRACERFLOW_STORE", str(store))

    lines = maintain_store_flow(keep_days=7)

    assert lines == [
        f"{store}: the embedded file keeps no snapshots and no inlined rows; checkpointed it "
        "(its write-ahead log folded into the file)"
    ]
    assert not store.with_name("scores.duckdb.wal").exists()
    assert queries.history(store) == history
