"""A lake's schema, read from the migrations: the statements that create it whole, and those that
move a lake from one version to the next in place.

A lake cannot run the migrations' SQL as the embedded file does: DuckLake has no PRIMARY KEY,
UNIQUE or CHECK constraints, and some migrations rebuild tables through renames. So the schema at
each version is built by the migrations themselves in an in-memory DuckDB database, and a lake
takes the difference between two versions: new tables, new columns, new, changed or dropped views
and macros. Those differences are what DuckLake does without rewriting a Parquet file (an added
column reads NULL, or its default, on older rows). A migration's own data statements (INSERT,
UPDATE, DELETE: a backfill) then run on the lake as written. A difference the lake cannot take in
place (a table or column dropped or renamed, a column's type changed) refuses the upgrade before
anything is written, naming the migration. No code here names a migration: a new one is taken as
it comes.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

import duckdb

from tracerflow.errors import StorageError
from tracerflow.storage.migrations import MIGRATIONS, Migration, apply_migrations

# The statement kinds of a migration that change rows, not the schema: run on a lake as written.
DATA_STATEMENTS = frozenset(
    {duckdb.StatementType.INSERT, duckdb.StatementType.UPDATE, duckdb.StatementType.DELETE}
)


@dataclass(frozen=True)
class Column:
    name: str
    data_type: str
    nullable: bool
    default: str | None

    def definition(self, added: bool = False) -> str:
        """The column as CREATE TABLE (or, ``added``, ALTER TABLE ADD COLUMN) writes it. An added
        column is nullable whatever the migration says: the rows already there have no value
        unless it has a default."""
        text = f'"{self.name}" {self.data_type}'
        if self.default is not None:
            text += f" DEFAULT {self.default}"
        if not self.nullable and not added:
            text += " NOT NULL"
        return text


@dataclass(frozen=True)
class Schema:
    """tracerflow's objects at one version, each in the order the migrations created it."""

    tables: tuple[tuple[str, tuple[Column, ...]], ...]
    macros: tuple[tuple[str, str], ...]  # name, CREATE MACRO statement
    views: tuple[tuple[str, str], ...]  # name, CREATE VIEW statement


def schema_at(version: int) -> Schema:
    """The schema the migrations up to ``version`` build."""
    return _every_schema()[version]


@functools.cache
def _every_schema() -> dict[int, Schema]:
    """The schema at every version (0: none), built by the migrations in one in-memory
    database, one migration at a time. Cached: shipped migrations never change."""
    template = duckdb.connect()
    try:
        schemas = {0: _read_schema(template)}
        for migration in MIGRATIONS:
            apply_migrations(template, migration.version)
            schemas[migration.version] = _read_schema(template)
        return schemas
    finally:
        template.close()


def _read_schema(template: duckdb.DuckDBPyConnection) -> Schema:
    tables = []
    for (name,) in template.execute(
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
        "AND NOT temporary ORDER BY table_oid"
    ).fetchall():
        columns = template.execute(
            "SELECT column_name, data_type, is_nullable, column_default FROM duckdb_columns() "
            "WHERE table_name = ? AND schema_name = 'main' ORDER BY column_index",
            [name],
        ).fetchall()
        tables.append((str(name), tuple(Column(*column) for column in columns)))
    macros = tuple(
        (str(name), f"CREATE MACRO {name}({', '.join(parameters)}) AS {definition}")
        for name, parameters, definition in template.execute(
            "SELECT function_name, parameters, macro_definition FROM duckdb_functions() "
            "WHERE function_type = 'macro' AND NOT internal AND schema_name = 'main' "
            "AND database_name = 'memory' ORDER BY function_oid"
        ).fetchall()
    )
    views = dependencies_first(
        [
            (str(name), str(sql).rstrip().rstrip(";"))
            for name, sql in template.execute(
                "SELECT view_name, sql FROM duckdb_views() WHERE NOT internal "
                "AND schema_name = 'main' ORDER BY view_oid"
            ).fetchall()
        ]
    )
    return Schema(tuple(tables), macros, views)


def dependencies_first(views: list[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """The views (name, CREATE VIEW sql), in creation order, reordered so that each comes after
    the views it names: a view replaced by a later migration (``CREATE OR REPLACE``) is newer
    than the views built on it, and a lake binds a view when it is created."""
    ordered: list[tuple[str, str]] = []
    pending = dict(views)
    while pending:
        ready = next(
            name
            for name, sql in pending.items()
            if not any(
                re.search(rf"\b{re.escape(other)}\b", sql) for other in pending if other != name
            )
        )
        ordered.append((ready, pending.pop(ready)))
    return tuple(ordered)


def create_statements(schema: Schema) -> list[str]:
    """The schema as CREATE statements a lake accepts: tables (without PRIMARY KEY, UNIQUE and
    CHECK, which DuckLake lacks), then macros, then views, in the order they were created."""
    statements = [
        f'CREATE TABLE "{name}" ({", ".join(column.definition() for column in columns)})'
        for name, columns in schema.tables
    ]
    return statements + [sql for _, sql in schema.macros] + [sql for _, sql in schema.views]


def upgrade_statements(before: Schema, after: Schema, migration: Migration) -> list[str]:
    """What moves a lake from ``before`` to ``after`` (``migration``'s result) in place: new
    tables, added columns, dropped then created or replaced macros and views, then the
    migration's data statements. ``StorageError`` naming the migration when the difference is one
    a lake cannot take in place."""
    refuse = functools.partial(_refused, migration)
    old_tables, new_tables = dict(before.tables), dict(after.tables)
    statements = []
    for name in old_tables.keys() - new_tables.keys():
        refuse(f"it drops or renames table {name}")
    for name, columns in after.tables:
        if name not in old_tables:
            body = ", ".join(column.definition() for column in columns)
            statements.append(f'CREATE TABLE "{name}" ({body})')
            continue
        old = {column.name: column for column in old_tables[name]}
        new = {column.name: column for column in columns}
        for gone in old.keys() - new.keys():
            refuse(f"it drops or renames column {name}.{gone}")
        for column in columns:
            if column.name not in old:
                statements.append(
                    f'ALTER TABLE "{name}" ADD COLUMN {column.definition(added=True)}'
                )
            elif old[column.name].data_type != column.data_type:
                refuse(
                    f"it changes the type of {name}.{column.name} "
                    f"({old[column.name].data_type} to {column.data_type})"
                )
    for kind, old_objects, new_objects in (
        ("MACRO", dict(before.macros), after.macros),
        ("VIEW", dict(before.views), after.views),
    ):
        names = {name for name, _ in new_objects}
        statements += [f'DROP {kind} "{name}"' for name in old_objects if name not in names]
        statements += [
            sql.replace(f"CREATE {kind}", f"CREATE OR REPLACE {kind}", 1)
            for name, sql in new_objects
            if old_objects.get(name) != sql
        ]
    return statements + data_statements(migration)


def data_statements(migration: Migration) -> list[str]:
    """The statements of ``migration`` that change rows (a backfill), as written."""
    return [
        statement.query.strip().rstrip(";").rstrip()
        for statement in duckdb.extract_statements(migration.sql)
        if statement.type in DATA_STATEMENTS
    ]


def _refused(migration: Migration, why: str) -> None:
    raise StorageError(
        f"schema migration {migration.version:03d} ({migration.name}) cannot run on a lake in "
        f"place: {why}; copy the lake's history into a new lake with the tracerflow that wrote "
        "it (`tracerflow store copy`), then record into the new one"
    )


def pending_upgrade(version: int) -> list[tuple[Migration, list[str]]]:
    """Every migration above ``version``, each with the statements that apply it to a lake; a
    ``StorageError`` before any is applied when one cannot run in place."""
    plan, previous = [], version
    for migration in MIGRATIONS:
        if migration.version > version:
            before, after = schema_at(previous), schema_at(migration.version)
            plan.append((migration, upgrade_statements(before, after, migration)))
            previous = migration.version
    return plan
