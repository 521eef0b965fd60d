"""The maintenance task as a Prefect deployment: registered from deployments/prefect.yaml by
`tracerflow deploy` beside the suites, and its flow run on the configured store."""

from __future__ import annotations

from pathlib import Path

import duckdb
import yaml

from tests.storage.builders import populate
from tracerflow.deploy import WORK_POOL, register
from tracerflow.flows.maintenance import maintain_store_flow
from tracerflow.storage import queries

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = "store-maintenance"


def test_the_maintenance_deployment_registers_with_its_weekly_schedule(
    prefect_api: None, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    shipped = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    # Only this deployment (`prefect deploy --all` of every one is the operate tests' work).
    shipped["deployments"] = [d for d in shipped["deployments"] if d["name"] == DEPLOYMENT]
    prefect_file = tmp_path / "prefect.yaml"
    prefect_file.write_text(yaml.safe_dump(shipped))

    (deployment,) = register(prefect_file, str(PREFECT_API_URL.value()))

    assert deployment.name == f"maintain-store/{DEPLOYMENT}"
    assert deployment.schedules == ["0 5 * * 0 (UTC)"]
    assert deployment.work_pool == WORK_POOL


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
