"""The PostgreSQL the tests and benchmarks share (``tests/postgres.py``) is a real server that
starts, serves several databases, keeps its data over a restart and leaves nothing behind."""

from __future__ import annotations

import psutil
import pytest

from tests.postgres import PostgresServer, PostgresUnavailable


def pid_alive(pid: int) -> bool:
    """True for a running process; an exited one awaiting its reaping (a zombie) is gone."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_a_server_serves_two_databases_keeps_data_over_a_restart_and_stops_clean() -> None:
    with PostgresServer() as postgres:
        first = postgres.create_database("first")
        postgres.create_database("second")
        assert first == f"dbname=first host=127.0.0.1 port={postgres.port} user=postgres"
        assert postgres.psql("first", "SELECT 1") == "1"
        assert postgres.psql("second", "SELECT current_database()") == "second"

        postgres.psql("first", "CREATE TABLE kept (n int); INSERT INTO kept VALUES (41), (1)")
        port, pid = postgres.port, postgres.pid
        postgres.restart()
        assert postgres.port == port
        assert postgres.pid != pid and pid is not None and not pid_alive(pid)
        assert postgres.psql("first", "SELECT sum(n) FROM kept") == "42"

        folder, pid = postgres.folder, postgres.pid
    assert pid is not None and not pid_alive(pid)
    assert folder is not None and not folder.exists()
    assert not postgres.running


def test_the_server_listens_on_loopback_only(postgres: PostgresServer) -> None:
    assert postgres.psql("postgres", "SHOW listen_addresses") == "127.0.0.1"


def test_each_test_gets_a_fresh_empty_database(postgres: PostgresServer, fresh_pg_database: str):
    name = dict(part.split("=") for part in fresh_pg_database.split())["dbname"]
    assert postgres.psql(name, "SELECT current_database()") == name
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
    assert postgres.psql(name, tables) == "0"
    assert postgres.sqlalchemy_url(name) == (
        f"postgresql+asyncpg://postgres@127.0.0.1:{postgres.port}/{name}"
    )


def test_missing_binaries_are_one_clear_error(tmp_path) -> None:
    with pytest.raises(PostgresUnavailable, match=f"initdb, pg_ctl, postgres .*{tmp_path}"):
        PostgresServer(bin_dir=tmp_path).start()


def test_a_database_name_that_is_not_an_identifier_is_refused(postgres: PostgresServer) -> None:
    with pytest.raises(ValueError, match=r"database name must match .*got 'x; DROP'"):
        postgres.create_database("x; DROP")
