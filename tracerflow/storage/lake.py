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
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import duckdb

from tracerflow.errors import StorageError, StoreUnreachableError
from tracerflow.storage.lake_schema import create_statements, pending_upgrade, schema_at
from tracerflow.storage.migrations import CURRENT_VERSION, MIGRATIONS, schema_version
from tracerflow.storage.paths import set_roots
from tracerflow.storage.pglock import SCHEMA_LOCK_KEY, catalog_lock
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
        set_roots(con)  # the views resolve stored paths against this host's roots
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

# How long a process waits for another to finish creating or migrating the lake's schema.
SCHEMA_LOCK_TIMEOUT_S = 120.0


def schema_statements(up_to: int | None = None) -> list[str]:
    """The schema (the current one, or the one at version ``up_to``) as CREATE statements a lake
    accepts (``lake_schema.create_statements``)."""
    return create_statements(schema_at(CURRENT_VERSION if up_to is None else up_to))


@contextlib.contextmanager
def schema_lock(store: LakeStore, timeout_s: float = SCHEMA_LOCK_TIMEOUT_S) -> Iterator[None]:
    """The lake's schema lock: a PostgreSQL advisory lock on its catalog database
    (``pglock.SCHEMA_LOCK_KEY``), held while one process creates or migrates the schema, so
    that two processes opening an old or new lake at once change it once."""
    with catalog_lock_for(store, SCHEMA_LOCK_KEY, timeout_s, "creating or migrating its schema"):
        yield


@contextlib.contextmanager
def catalog_lock_for(store: LakeStore, key: int, timeout_s: float, purpose: str) -> Iterator[None]:
    """``pglock.catalog_lock`` on ``store``'s catalog, on a connection of its own, with a
    driver's error (an unreachable catalog) in one masked line."""
    what = f"{purpose} in {store.describe()}"
    with contextlib.closing(new_connection()) as con, contextlib.ExitStack() as held:
        try:
            held.enter_context(catalog_lock(con, store.conninfo, key, timeout_s, what))
        except duckdb.Error as error:
            raise lake_error(store, error, read_only=False) from None
        yield


def ensure_schema(con: Connection, store: LakeStore) -> None:
    """Create tracerflow's tables and views in a new lake, or migrate one at an older version in
    place, under the schema lock; refuse one from a newer tracerflow."""
    version = _known_version(con, store)
    if version == CURRENT_VERSION:
        return
    with schema_lock(store):
        version = _known_version(con, store)  # another process may have done it meanwhile
        if version == CURRENT_VERSION:
            return
        if version > 0:
            migrate_in_place(con, version)
        else:
            create_schema(con, CURRENT_VERSION)


def _known_version(con: Connection, store: LakeStore) -> int:
    version = schema_version(con)
    if version > CURRENT_VERSION:
        raise StorageError(
            f"the lake {store.describe()} is at schema version {version}, newer than this "
            f"tracerflow knows ({CURRENT_VERSION}); upgrade tracerflow to use it"
        )
    return version


def create_schema(con: Connection, version: int) -> None:
    """Create the schema at ``version`` (the current one, but for a test's older lake) in a new
    lake, in one transaction, with the history of the migrations it stands for."""

    def create(con: Connection) -> None:
        for statement in schema_statements(version):
            con.execute(statement)
        now = datetime.now(UTC).replace(tzinfo=None)
        for migration in MIGRATIONS:  # the lake is born at this version, with its history
            if migration.version <= version:
                con.execute(
                    "INSERT INTO schema_version VALUES (?, ?, ?)",
                    [migration.version, migration.name, now],
                )
        con.execute(f"CREATE TABLE {WRITER_TURN_TABLE} (writes BIGINT NOT NULL)")
        con.execute(f"INSERT INTO {WRITER_TURN_TABLE} VALUES (0)")

    # A process of an older tracerflow (which takes no schema lock) creating the same new lake
    # conflicts ("two creates of the same name"); the one that loses retries, finds the schema.
    _in_transaction(con, create, timeout_s=60.0, done=lambda c: schema_version(c) >= version)


def migrate_in_place(con: Connection, version: int) -> None:
    """Move a lake at ``version`` to the current one in one transaction: every pending
    migration's statements (``lake_schema.pending_upgrade``) and its ``schema_version`` row. It
    takes the writer's turn too, so a write of an older tracerflow that overlaps it conflicts
    and retries instead of landing half in each schema."""
    plan = pending_upgrade(version)  # refuses before anything is written

    def upgrade(con: Connection) -> None:
        con.execute(f"UPDATE {WRITER_TURN_TABLE} SET writes = writes + 1")
        now = datetime.now(UTC).replace(tzinfo=None)
        for migration, statements in plan:
            for statement in statements:
                con.execute(statement)
            con.execute(
                "INSERT INTO schema_version VALUES (?, ?, ?)",
                [migration.version, migration.name, now],
            )

    _in_transaction(
        con, upgrade, timeout_s=60.0, done=lambda c: schema_version(c) == CURRENT_VERSION
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
