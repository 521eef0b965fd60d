"""Connections to a DuckLake store: the catalog in PostgreSQL, Parquet data under a data path.

The two DuckDB extensions come from pinned PyPI packages (DuckDB's signed binaries) and are
loaded from an ``extension_directory`` built from them; nothing is downloaded at run time and
autoinstall is off. The lake holds the same tables, views and macros as the embedded file: its
schema is created once, in one transaction, from an in-memory database the migrations built, so
the two cannot drift (DuckLake has no PRIMARY KEY or UNIQUE constraints; the writer keeps ids
unique itself).

Writers on several hosts commit concurrently. DuckLake settles races between plain appends by
itself, but two runs that both insert the same new transcoder would both see it missing; so every
write also rewrites the one row of ``lake_writes``, which makes any two overlapping writes
conflict, and the later one is rolled back and retried from the start against the new snapshot.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import re
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb

from tracerflow.errors import StorageError, StoreUnreachableError
from tracerflow.storage.migrations import (
    CURRENT_VERSION,
    MIGRATIONS,
    Migration,
    apply_migrations,
    schema_version,
)
from tracerflow.storage.store import AsOf, LakeStore, NoHistoryError

Connection = duckdb.DuckDBPyConnection
T = TypeVar("T")

CATALOG = "lake"
# (PyPI package, file in the package, file name DuckDB loads it under). The postgres extension's
# entry point is named after the file, so it must be called postgres_scanner.
EXTENSIONS = (
    ("duckdb_extension_ducklake", "ducklake", "ducklake"),
    ("duckdb_extension_postgres", "postgres", "postgres_scanner"),
)
# The one-row table every write rewrites, so that overlapping writes conflict (see above).
WRITER_TURN_TABLE = "lake_writes"


def extension_directory() -> Path:
    """A folder laid out as DuckDB expects (``<dir>/v<version>/<platform>/<name>.duckdb_extension``)
    whose files link to the ones the pinned packages installed."""
    version = f"v{duckdb.__version__}"
    platform = str(duckdb.execute("PRAGMA platform").fetchone()[0])  # type: ignore[index]
    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tracerflow"
    folder = root / "duckdb-extensions" / version / platform
    folder.mkdir(parents=True, exist_ok=True)
    for package, name, load_as in EXTENSIONS:
        try:
            module = importlib.import_module(package)
        except ImportError as error:
            raise StorageError(
                f"a DuckLake store needs the {package.replace('_', '-')}=={duckdb.__version__} "
                f"package; reinstall tracerflow (`pip install -e .`)"
            ) from error
        source = (
            Path(module.__file__ or "").parent / "extensions" / version / f"{name}.duckdb_extension"
        )
        if not source.is_file():
            raise StorageError(
                f"{package.replace('_', '-')} has no extension for DuckDB {duckdb.__version__} "
                f"(looked for {source}); install the version matching duckdb=={duckdb.__version__}"
            )
        target = folder / f"{load_as}.duckdb_extension"
        if not (target.is_symlink() and target.resolve() == source.resolve()):
            staging = folder / f".{load_as}.{os.getpid()}.tmp"
            staging.unlink(missing_ok=True)
            staging.symlink_to(source)
            staging.replace(target)  # atomic: a concurrent process sees the old or the new link
    return root / "duckdb-extensions"


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def connect(store: LakeStore, read_only: bool, as_of: AsOf | None = None) -> Connection:
    """A connection with the lake attached as its default catalog; read-only connections are
    locked down.

    A read-only connection cannot write the lake (``READ_ONLY``), read files outside the data
    path, attach anything else or change settings, so a query typed by a person changes nothing.
    """
    con = new_connection()
    try:
        attach(con, store, CATALOG, read_only=read_only, as_of=as_of)
        con.execute(f"USE {CATALOG}")
        if read_only:
            data_path = store.data_path or _recorded_data_path(con, CATALOG)
            con.execute(f"SET allowed_directories = [{_quote(str(data_path))}]")
            con.execute("SET enable_external_access = false")
            con.execute("SET lock_configuration = true")
    except duckdb.Error as error:  # PostgreSQL lost right after the ATTACH: one masked line
        con.close()
        raise lake_error(store, error, read_only) from None
    except BaseException:
        con.close()
        raise
    return con


def new_connection(database: str = ":memory:") -> Connection:
    """A DuckDB connection (to ``database``) with the lake's extensions loaded from the pinned
    packages; it never downloads an extension."""
    con = duckdb.connect(
        database,
        config={
            "extension_directory": str(extension_directory()),
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
        },
    )
    try:
        # A long query in a flow run or a worker must not draw bars into its log.
        con.execute("SET enable_progress_bar = false")
        con.execute("LOAD ducklake")
        con.execute("LOAD postgres")
    except duckdb.Error as error:
        con.close()
        raise StorageError(f"cannot load DuckDB's ducklake/postgres extensions: {error}") from error
    return con


def check_data_path(data_path: Path) -> None:
    """``StorageError`` (exit 2) unless ``data_path`` is an existing folder this process can
    write a file into (tried with a probe file, removed at once)."""
    if not data_path.is_dir():
        what = "is not a folder" if data_path.exists() else "does not exist"
        raise StorageError(
            f"the lake's data path {data_path} {what}: create it (a folder every machine mounts "
            "at the same path) or correct TRACERFLOW_LAKE_DATA_PATH"
        )
    try:
        with tempfile.NamedTemporaryFile(dir=data_path, prefix=".tracerflow-probe-"):
            pass
    except OSError as error:
        raise StorageError(
            f"the lake's data path {data_path} is not writable ({error.strerror}); nothing was "
            "written to the lake"
        ) from None


def attach(
    con: Connection, store: LakeStore, alias: str, read_only: bool, as_of: AsOf | None = None
) -> None:
    """``ATTACH`` the lake to ``con`` as ``alias`` (at ``as_of``, when given). A writer's data
    folder is checked first: DuckLake records a new lake's data path in its catalog at the first
    ATTACH, even when the write then fails, and refuses every other path after that."""
    if not read_only and store.data_path is not None:
        check_data_path(store.data_path)
    options = []
    if store.data_path is not None:
        options.append(f"DATA_PATH {_quote(str(store.data_path) + os.sep)}")
    if read_only:
        options.append("READ_ONLY")
    if as_of is not None and as_of.snapshot is not None:
        options.append(f"SNAPSHOT_VERSION {int(as_of.snapshot)}")
    elif as_of is not None and as_of.time is not None:
        options.append(f"SNAPSHOT_TIME {_quote(as_of.time.isoformat(sep=' '))}")
    statement = f"ATTACH {_quote(store.url)} AS {alias}"
    try:
        con.execute(statement + (f" ({', '.join(options)})" if options else ""))
    except duckdb.Error as error:
        # Not chained: the driver's own message (in a traceback) may hold the password.
        raise lake_error(store, error, read_only) from None


def _recorded_data_path(con: Connection, alias: str) -> str:
    row = con.execute(
        f"SELECT value FROM ducklake_options({_quote(alias)}) WHERE option_name = 'data_path'"
    ).fetchone()
    return str(row[0]) if row else ""


# What libpq and DuckDB's postgres extension say when the catalog cannot be reached, or when the
# connection was lost in the middle of a query (the server stopped, restarted, the network went).
_UNREACHABLE = (
    "unable to connect to postgres",
    "could not connect",
    "server closed the connection unexpectedly",
    "terminating connection",
    "no connection to the server",
    "connection to server",
    "ssl syscall error",
)


def is_unreachable(error: duckdb.Error) -> bool:
    """The lake's PostgreSQL catalog could not be reached (down, restarted, a lost network), at
    the start or in the middle of a query."""
    text = str(error).lower()
    return any(sign in text for sign in _UNREACHABLE)


def lake_error(store: LakeStore, error: duckdb.Error, read_only: bool) -> StorageError:
    """One clear line for the failures a user meets, the password never shown: an unreachable
    catalog is a ``StoreUnreachableError`` (a later try may work), whenever it is met."""
    text = store.mask(str(error))
    where = store.describe()
    if "creating a new DuckLake is explicitly disabled" in text:
        return NoHistoryError(
            f"no score history in {where}: the lake is created by the first run that records "
            f"into it (`tracerflow run --store ...`) or by `tracerflow store copy`"
        )
    if "data_path is not set" in text:
        return needs_data_path(store)
    if is_unreachable(error):
        reason = text.split("failed:", 1)[-1].strip().splitlines()[0] if "failed:" in text else ""
        return StoreUnreachableError(
            f"cannot reach the lake's PostgreSQL catalog ({where}){': ' + reason if reason else ''}"
        )
    if "No snapshot found" in text:
        return StorageError(f"{where}: {text.split('Error:', 1)[-1].strip()}")
    action = "read" if read_only else "open for writing"
    return StorageError(f"cannot {action} the lake {where}: {text.strip().splitlines()[0]}")


def needs_data_path(store: LakeStore) -> StorageError:
    """The error of a new lake given no data folder."""
    return StorageError(
        f"{store.describe()} is a new lake and needs a data folder for its Parquet files: set "
        "TRACERFLOW_LAKE_DATA_PATH (a folder every machine mounts at the same path)"
    )


# --- schema -------------------------------------------------------------------------------


def schema_statements(up_to: int | None = None) -> list[str]:
    """The schema (the current one, or the one at version ``up_to``) as CREATE statements a lake
    accepts: tables (without PRIMARY KEY and UNIQUE, which DuckLake lacks), then macros, then
    views, in the order they were created."""
    template = duckdb.connect()
    try:
        apply_migrations(template, up_to)
        statements = []
        for (name,) in template.execute(
            "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
            "AND NOT temporary ORDER BY table_oid"
        ).fetchall():
            columns = template.execute(
                "SELECT column_name, data_type, is_nullable FROM duckdb_columns() "
                "WHERE table_name = ? AND schema_name = 'main' ORDER BY column_index",
                [name],
            ).fetchall()
            body = ", ".join(
                f'"{column}" {data_type}{"" if nullable else " NOT NULL"}'
                for column, data_type, nullable in columns
            )
            statements.append(f'CREATE TABLE "{name}" ({body})')
        for name, parameters, definition in template.execute(
            "SELECT function_name, parameters, macro_definition FROM duckdb_functions() "
            "WHERE function_type = 'macro' AND NOT internal AND schema_name = 'main' "
            "AND database_name = 'memory'"
        ).fetchall():
            statements.append(f"CREATE MACRO {name}({', '.join(parameters)}) AS {definition}")
        for (sql,) in template.execute(
            "SELECT sql FROM duckdb_views() WHERE NOT internal AND schema_name = 'main' "
            "ORDER BY view_oid"
        ).fetchall():
            statements.append(sql.rstrip().rstrip(";"))
        return statements
    finally:
        template.close()


def ensure_schema(con: Connection, store: LakeStore) -> None:
    """Create tracerflow's tables and views in a new lake; refuse one at another version."""
    version = schema_version(con)
    if version == CURRENT_VERSION:
        return
    if version > CURRENT_VERSION:
        raise StorageError(
            f"the lake {store.describe()} is at schema version {version}, newer than this "
            f"tracerflow knows ({CURRENT_VERSION}); upgrade tracerflow to use it"
        )
    if version > 0:
        if not upgrades_in_place(version):
            raise StorageError(
                f"the lake {store.describe()} is at schema version {version}, older than this "
                f"tracerflow ({CURRENT_VERSION}), and only migrations that add columns or new "
                "tables run on a lake in place: copy its history into a new lake with the "
                "tracerflow that wrote it (`tracerflow store copy`)"
            )
        pending = [migration for migration in MIGRATIONS if migration.version > version]
        _in_transaction(
            con,
            lambda con: _add_columns(con, pending),
            timeout_s=60.0,
            done=lambda c: schema_version(c) == CURRENT_VERSION,
        )
        return

    def create(con: Connection) -> None:
        for statement in schema_statements():
            con.execute(statement)
        now = datetime.now(UTC).replace(tzinfo=None)
        for migration in MIGRATIONS:  # the lake is born at the current version, with its history
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                [migration.version, migration.name, now],
            )
        con.execute(f"CREATE TABLE {WRITER_TURN_TABLE} (writes BIGINT NOT NULL)")
        con.execute(f"INSERT INTO {WRITER_TURN_TABLE} VALUES (0)")

    # Two writers creating the same new lake conflict ("two creates of the same name"); the one
    # that loses retries, finds the schema there and goes on.
    _in_transaction(
        con, create, timeout_s=60.0, done=lambda c: schema_version(c) == CURRENT_VERSION
    )


# A migration a lake can apply in place: statements that each add one nullable column, or that
# only create new tables and views. DuckLake adds a column without rewriting a Parquet file (old
# files read it as NULL), and the views select ``s.*``, so they show it at once; a new table
# starts empty, as it would in a file migrated to it.
_ADD_COLUMN = re.compile(r"ALTER TABLE \w+ ADD COLUMN \w+ [A-Z]+", re.IGNORECASE)
_CREATE = re.compile(r"CREATE (TABLE|VIEW) \w+ .*", re.IGNORECASE | re.DOTALL)


def column_additions(migration: Migration) -> list[str]:
    """The statements of ``migration`` if each adds one nullable column; [] otherwise."""
    statements = _statements(migration)
    if statements and all(_ADD_COLUMN.fullmatch(statement) for statement in statements):
        return statements
    return []


def _statements(migration: Migration) -> list[str]:
    code = "\n".join(line.split("--", 1)[0] for line in migration.sql.splitlines())
    return [statement.strip() for statement in code.split(";") if statement.strip()]


def created_objects(migration: Migration) -> list[str]:
    """When ``migration`` only creates tables and views, the lake's form of what it creates
    (``schema_statements`` of its version less those of the one before: no keys); [] otherwise,
    and also when it would change anything that existed before it."""
    statements = _statements(migration)
    if not statements or not all(_CREATE.fullmatch(statement) for statement in statements):
        return []
    before = schema_statements(migration.version - 1)
    after = schema_statements(migration.version)
    if not set(before) <= set(after):
        return []
    return [statement for statement in after if statement not in before]


def in_place_statements(migration: Migration) -> list[str]:
    """What brings a lake from the version before ``migration`` to its version without
    rewriting a row; [] when nothing can (then a lake is copied into a new one instead)."""
    return column_additions(migration) or created_objects(migration)


def upgrades_in_place(version: int) -> bool:
    """Whether a lake at ``version`` reaches the current one in place (columns or new tables)."""
    pending = [migration for migration in MIGRATIONS if migration.version > version]
    return all(in_place_statements(migration) for migration in pending)


def _add_columns(con: Connection, migrations: list[Migration]) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    for migration in migrations:
        for statement in in_place_statements(migration):
            con.execute(statement)
        con.execute(
            "INSERT INTO schema_version VALUES (?, ?, ?)",
            [migration.version, migration.name, now],
        )


# --- writes -------------------------------------------------------------------------------


def _is_conflict(error: duckdb.Error) -> bool:
    """A commit DuckLake refused because a concurrent one changed what this one touched."""
    return isinstance(error, duckdb.TransactionException) or "conflict" in str(error).lower()


def _in_transaction(
    con: Connection,
    body: Callable[[Connection], T],
    timeout_s: float,
    done: Callable[[Connection], bool] | None = None,
) -> T | None:
    """Run ``body`` in one transaction, retried from the start while it conflicts with a
    concurrent write (jittered backoff from 20 ms to 1 s, for up to ``timeout_s``). ``done``,
    checked before each attempt, ends the loop early when a concurrent writer did the work."""
    deadline = time.monotonic() + timeout_s
    delay = 0.02
    while True:
        if done is not None and done(con):
            return None
        con.execute("BEGIN TRANSACTION")
        try:
            result = body(con)
            con.execute("COMMIT")
            return result
        except BaseException as error:
            with contextlib.suppress(duckdb.Error):
                con.execute("ROLLBACK")
            retry = isinstance(error, duckdb.Error) and _is_conflict(error)
            if not retry or time.monotonic() + delay > deadline:
                raise
        time.sleep(delay * random.uniform(0.5, 1.5))
        delay = min(delay * 2, 1.0)


def write(
    store: LakeStore,
    body: Callable[[Connection], T],
    timeout_s: float,
    prepare: Callable[[Connection], None] | None = None,
) -> T:
    """Run ``body`` in one lake transaction that takes the writer's turn; conflicts retried.
    ``prepare`` runs once before, outside the transaction (an ATTACH cannot run inside one)."""

    def take_turn_then(con: Connection) -> T:
        con.execute(f"UPDATE {WRITER_TURN_TABLE} SET writes = writes + 1")
        return body(con)

    con = open_writer(store)
    try:
        if prepare is not None:
            prepare(con)
        return _in_transaction(con, take_turn_then, timeout_s)  # type: ignore[return-value]
    finally:
        con.close()


def open_writer(store: LakeStore) -> Connection:
    """A writable connection to the lake, its schema created first when the lake is new."""
    con = connect(store, read_only=False)
    try:
        ensure_schema(con, store)
    except BaseException:
        con.close()
        raise
    return con
