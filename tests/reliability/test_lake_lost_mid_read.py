"""A lake whose PostgreSQL stops in the middle of a read command ends that command in one
`error:` line, exit 1 (the store is fine, a later try may work), its password masked; never a
raw `_duckdb.Error` traceback (2 of 15 tries of `history` gave one when the server stopped
between the ATTACH and the first read) and never the driver's message with the password in it
(`sql` printed it when the server stopped before its query).

The server is stopped at a chosen point of the command, in-process: right after the lake is
attached, or right after the reader checked the schema (before the command's own queries). The
real `tracerflow` app, a real lake on a PostgreSQL of this module's own (the tests stop it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.postgres import PostgresServer
from tests.storage.builders import populate
from tracerflow.cli import app
from tracerflow.storage import database, lake
from tracerflow.storage.store import LakeStore

PASSWORD = "s3cret"  # the server trusts every local login, so it is sent and ignored


@pytest.fixture(scope="module")
def lake_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[PostgresServer, str]]:
    """A PostgreSQL of this module's own with a populated lake; the lake's store URL."""
    with PostgresServer() as server:
        data_path = tmp_path_factory.mktemp("lake-data")
        conninfo = f"{server.create_database('lake')} password={PASSWORD}"
        populate(LakeStore(conninfo, data_path), nights=1)  # type: ignore[arg-type]
        yield server, f"ducklake:postgres:{conninfo}"


def stopping_after(function: Callable[..., Any], server: PostgresServer) -> Callable[..., Any]:
    """``function``, after which the PostgreSQL server stops."""

    def then_stop(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        server.pause()
        return result

    return then_stop


COMMANDS = {
    "history": ["history"],
    "sql": ["sql", "SELECT count(*) FROM scores"],
    "store snapshots": ["store", "snapshots"],
}
CASES = [
    ("after the ATTACH", "history"),  # the window of the raw traceback
    ("before the command's queries", "history"),
    ("before the command's queries", "sql"),
    ("before the command's queries", "store snapshots"),
]


@pytest.mark.parametrize(("when", "command"), CASES)
def test_a_lake_lost_mid_read_ends_in_one_masked_line(
    lake_server: tuple[PostgresServer, str],
    monkeypatch: pytest.MonkeyPatch,
    when: str,
    command: str,
) -> None:
    server, url = lake_server
    if when == "after the ATTACH":
        monkeypatch.setattr(lake, "attach", stopping_after(lake.attach, server))
    else:
        monkeypatch.setattr(
            database, "schema_version", stopping_after(database.schema_version, server)
        )
    try:
        result = CliRunner().invoke(app, [*COMMANDS[command], "--store", url])
    finally:
        if not server.running:
            server.resume()

    assert isinstance(result.exception, SystemExit), result.exception  # not a raw error
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: cannot reach the lake's PostgreSQL catalog"), lines[0]
    assert PASSWORD not in result.output and "password=***" in result.output
