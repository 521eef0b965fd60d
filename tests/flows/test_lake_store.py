"""A scoring run that records into a DuckLake (TRACERFLOW_STORE), read back by the commands."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.postgres import PostgresServer
from tracerflow.flows.score import score_flow
from tracerflow.parameters import RunRequest
from tracerflow.settings import get_settings
from tracerflow.storage import queries

CAT_REQUEST = RunRequest(transcoders=["toy-clt"], prompts=["The cat sat on the"])


def tracerflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )


def test_a_run_records_into_the_lake_the_setting_names_and_the_commands_read_it(
    home: Path, fresh_pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The test server trusts every local connection, so the password is sent nowhere; it must
    # not appear anywhere a run or a command writes either.
    url = f"ducklake:postgres:{fresh_pg_database} password={PASSWORD}"
    monkeypatch.setenv("TRACERFLOW_STORE", url)
    (tmp_path / "lake-data").mkdir()
    monkeypatch.setenv("TRACERFLOW_LAKE_DATA_PATH", str(tmp_path / "lake-data"))

    state = score_flow(CAT_REQUEST, return_state=True)
    written = [run_logs_and_artifacts(state.state_details.flow_run_id)]

    assert state.is_completed()
    flow_run_id = str(state.state_details.flow_run_id)
    recorded = queries.scores_of_run(get_settings().score_store, flow_run_id)
    assert [(row["transcoder_source"], row["status"]) for row in recorded] == [("toy-clt", "ok")]
    assert not get_settings().database_path.exists()  # nothing went to the embedded file

    history = tracerflow("history", "--format", "csv")
    assert history.returncode == 0, history.stderr
    assert flow_run_id in history.stdout and "The cat sat on the" in history.stdout
    snapshots = tracerflow("store", "snapshots")
    assert snapshots.returncode == 0 and "tables_created" in snapshots.stdout

    # The file route and the lake route give one history: copy the lake into a file.
    copied = tracerflow("store", "copy", "--from", url, "--to", str(tmp_path / "copy.duckdb"))
    assert copied.returncode == 0, copied.stderr
    assert queries.scores_of_run(tmp_path / "copy.duckdb", flow_run_id) == recorded

    written += [result.stdout + result.stderr for result in (history, snapshots, copied)]
    assert all(PASSWORD not in text for text in written)
    assert "password=***" in written[0]  # the run's log names the store, masked


PASSWORD = "s3cret@pa55"


def run_logs_and_artifacts(flow_run_id: object) -> str:
    """Every log line and artifact a flow run left on the Prefect API, as one text."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        LogFilter,
        LogFilterFlowRunId,
    )
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()  # logs reach the API in batches: send what is pending first
    with get_client(sync_client=True) as client:
        logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    return "\n".join([log.message for log in logs] + [str(a.data) for a in artifacts])


def test_store_commands_fail_in_one_line_with_exit_2_on_bad_stores(tmp_path: Path) -> None:
    for args, expected in (
        (("history", "--store", "ducklake:sqlite:x.db"), "only DuckLake catalogs in PostgreSQL"),
        (("history", "--store", "postgresql://u:pw@h/db"), "neither a path to a .duckdb file"),
        (("history", "--as-of", "yesterday"), "neither a snapshot id"),
        (("store", "snapshots", "--store", str(tmp_path / "x.duckdb")), "keeps no snapshots"),
        (("store", "copy", "--from", str(tmp_path / "none.duckdb"), "--to", "x.duckdb"),
         "no score database at"),
    ):  # fmt: skip
        result = tracerflow(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert expected in result.stderr and result.stderr.count("\n") == 1, result.stderr
        assert "pw@" not in result.stderr
    # A lake whose PostgreSQL is down is not bad input: a later try may work (exit 1).
    down = "ducklake:postgres:dbname=x host=127.0.0.1 port=1 user=u password=sekrit"
    result = tracerflow("history", "--store", down)
    assert result.returncode == 1 and "cannot reach the lake's PostgreSQL" in result.stderr
    assert "sekrit" not in result.stderr


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL of this test's own: the test takes it down, which the session's must not."""
    with PostgresServer() as server:
        yield server


def lake_env(monkeypatch: pytest.MonkeyPatch, postgres: PostgresServer, tmp_path: Path) -> str:
    url = f"ducklake:postgres:{postgres.create_database('lake')}"
    monkeypatch.setenv("TRACERFLOW_STORE", url)
    (tmp_path / "lake-data").mkdir()
    monkeypatch.setenv("TRACERFLOW_LAKE_DATA_PATH", str(tmp_path / "lake-data"))
    return url


@pytest.mark.slow
def test_a_run_whose_lake_is_down_fails_in_one_line_and_a_rerun_records_it_once(
    home: Path, own_postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.settings import PREFECT_API_URL

    lake_env(monkeypatch, own_postgres, tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", str(PREFECT_API_URL.value()))
    args = ("run", "--transcoder", "toy-clt", "--prompt", "The cat sat on the")
    own_postgres.pause()  # down for the whole run, its record retries included
    failed = tracerflow(*args)
    own_postgres.resume()

    assert failed.returncode == 1, failed.stdout + failed.stderr
    # Prefect's own log lines go to stderr too; the verdict is the one `error:` line, last.
    errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
    assert errors == failed.stderr.strip().splitlines()[-1:], failed.stderr[-3000:]
    (line,) = errors
    assert line.startswith("error: the run was not recorded: cannot reach the lake's PostgreSQL")
    assert "a re-run will record it" in line

    rerun = tracerflow(*args)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    store = get_settings().score_store
    assert queries.run_sql(store, "SELECT count(*) FROM runs")[1] == [(1,)]
    assert queries.run_sql(store, "SELECT count(*), count(DISTINCT prompt_id) FROM scores")[1] == [
        (1, 1)
    ]


def test_a_lake_restarted_while_the_record_stage_retries_lets_the_run_complete(
    home: Path, own_postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterName

    lake_env(monkeypatch, own_postgres, tmp_path)
    own_postgres.pause()
    resumed = threading.Event()

    def resume_once_the_record_stage_failed() -> None:
        """Bring PostgreSQL back once the record stage has failed and awaits its retry."""
        with get_client(sync_client=True) as client:
            while not resumed.is_set():
                runs = client.read_task_runs(
                    task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="record"))
                )
                if any(run.state and run.state.name == "AwaitingRetry" for run in runs):
                    own_postgres.resume()
                    resumed.set()
                    return
                resumed.wait(0.2)

    watcher = threading.Thread(target=resume_once_the_record_stage_failed, daemon=True)
    watcher.start()
    try:
        state = score_flow(CAT_REQUEST, return_state=True)
    finally:
        resumed.set()
        watcher.join(timeout=30)
        if not own_postgres.running:
            own_postgres.resume()

    assert state.is_completed(), state.message
    flow_run_id = str(state.state_details.flow_run_id)
    recorded = queries.scores_of_run(get_settings().score_store, flow_run_id)
    assert [row["status"] for row in recorded] == ["ok"]


def test_a_new_lake_without_a_data_path_is_refused_at_the_door_in_one_line(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    # Found by the hostile replay of issue 24: the run started, scored, and failed at its record
    # step after 50 s with 112 lines; a lake nobody wrote needs a data folder, which the door
    # can tell in a second.
    url = f"ducklake:postgres:{postgres.create_database('new_lake_no_data_path')}"
    env = {k: v for k, v in os.environ.items() if k != "TRACERFLOW_LAKE_DATA_PATH"}
    result = subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "run", "--preset", "toy-clt", "--prompt", "Hi",
         "--store", url],
        capture_output=True, text=True, timeout=300,
        env={**env, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
             "TRACERFLOW_HOME": str(tmp_path / "home")},
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {url} is a new lake and needs a data folder for its Parquet files: set "
        "TRACERFLOW_LAKE_DATA_PATH (a folder every machine mounts at the same path)"
    ]
    assert not (tmp_path / "home" / "server").exists()  # no Prefect server was started
