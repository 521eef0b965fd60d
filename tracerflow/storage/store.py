"""Where the score history lives: one setting, two kinds of store.

- ``FileStore``: the embedded DuckDB file under ``$TRACERFLOW_HOME`` (the default). One machine,
  no server; writers take turns through a file lock.
- ``LakeStore``: a DuckLake whose catalog is a PostgreSQL database and whose data are Parquet
  files under a data path (a folder every machine mounts). Many writers on many hosts.

Both hold the same tables and views, so every reader (``history``, ``compare``, ``sql``,
``plot``, the viewer, the UI summary) works on either. ``TRACERFLOW_STORE`` or ``--store`` selects
one: a file path, or ``ducklake:postgres:<libpq conninfo>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from tracerflow.errors import ConfigError, StorageError

LAKE_PREFIX = "ducklake:postgres:"


@dataclass(frozen=True)
class FileStore:
    """The embedded DuckDB file."""

    path: Path

    def describe(self) -> str:
        return str(self.path)

    def mask(self, text: str) -> str:
        """``text`` as is: a file store has no secret."""
        return text

    __str__ = describe  # a log line or message names the file, as a user wrote it


@dataclass(frozen=True)
class LakeStore:
    """A DuckLake: the catalog in the PostgreSQL database ``conninfo`` names, Parquet files under
    ``data_path`` (None: the path the catalog recorded when the lake was created)."""

    conninfo: str = field(repr=False)  # may hold a password: never printed as it is
    data_path: Path | None = None

    @property
    def url(self) -> str:
        return LAKE_PREFIX + self.conninfo

    def describe(self) -> str:
        """The URL with any password masked: safe for logs, errors and the UI."""
        return LAKE_PREFIX + mask_conninfo(self.conninfo)

    def mask(self, text: str) -> str:
        """``text`` (a driver's error, a log line) with this lake's password masked wherever it
        stands, in the conninfo or quoted alone."""
        masked = mask_conninfo(text.replace(self.conninfo, mask_conninfo(self.conninfo)))
        for password in conninfo_passwords(self.conninfo):
            masked = masked.replace(password, "***")
        return masked

    def __repr__(self) -> str:
        return f"LakeStore({self.describe()!r}, data_path={self.data_path!r})"

    __str__ = describe


Store = FileStore | LakeStore
# What the storage functions take: a store, or a path/URL `parse_store` reads.
StoreLike = Store | Path | str


class NoHistoryError(StorageError):
    """The store holds no tracerflow history yet (no file, or a lake nobody has written)."""


def mask_conninfo(conninfo: str) -> str:
    """A libpq conninfo with its password shown as ``***``: ``password=secret`` (key/value form)
    and ``user:secret@`` (URI form). Prefect's database URLs: ``server.mask_password``."""
    masked = _KEY_VALUE_PASSWORD.sub(r"\1***", conninfo)
    # Up to the last '@' of the token: a password may hold '@' itself.
    return _URI_PASSWORD.sub(r"\1***@", masked)


_KEY_VALUE_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s\"']+)")
_URI_PASSWORD = re.compile(r"(://[^:/@\s]+:)\S*@")


def conninfo_passwords(conninfo: str) -> list[str]:
    """The passwords a conninfo holds (key/value, quoted or not, and URI form), as they would
    appear in a driver's message: for ``LakeStore.mask``."""
    found = []
    for match in _KEY_VALUE_PASSWORD.finditer(conninfo):
        value = match.group(2)
        found.append(value)
        if value.startswith("'"):  # the value itself, as libpq reads it
            found.append(re.sub(r"\\(.)", r"\1", value[1:-1]))
    for match in re.finditer(r"://[^:/@\s]+:(\S*)@", conninfo):
        found.append(match.group(1))
    # Longest first: a password that holds another is masked whole. Empty ones mask nothing.
    return sorted({value for value in found if value}, key=len, reverse=True)


def parse_store(value: str | Path | Store, data_path: Path | str | None = None) -> Store:
    """A store from a setting or an option: a ``FileStore``/``LakeStore`` as is, a
    ``ducklake:postgres:<conninfo>`` URL, or else a path to a ``.duckdb`` file.

    ``data_path`` is the lake's data folder (``$TRACERFLOW_LAKE_DATA_PATH``); it is ignored for
    a file store.
    """
    if isinstance(value, FileStore | LakeStore):
        return value
    if isinstance(value, Path):
        return FileStore(value.expanduser())
    text = value.strip()
    if text.startswith("ducklake:"):
        if not text.startswith(LAKE_PREFIX):
            raise ConfigError(
                f"store {mask_conninfo(text)!r}: only DuckLake catalogs in PostgreSQL are "
                f"supported, as {LAKE_PREFIX}<libpq conninfo> (e.g. "
                f"'{LAKE_PREFIX}dbname=lake host=db.example port=5432 user=tracerflow')"
            )
        conninfo = text.removeprefix(LAKE_PREFIX).strip()
        if not conninfo:
            raise ConfigError(
                f"store {text!r} names no PostgreSQL database: give a libpq conninfo after "
                f"'{LAKE_PREFIX}', e.g. 'dbname=lake host=127.0.0.1 port=5432 user=postgres'"
            )
        folder = Path(data_path).expanduser().resolve() if data_path else None
        return LakeStore(conninfo, folder)
    if not text or "://" in text:
        raise ConfigError(
            f"store {mask_conninfo(text)!r} is neither a path to a .duckdb file nor "
            f"{LAKE_PREFIX}<libpq conninfo>"
        )
    return FileStore(Path(text).expanduser())


@dataclass(frozen=True)
class AsOf:
    """A point in a lake's history to read at: a snapshot id or a time (UTC)."""

    snapshot: int | None = None
    time: datetime | None = None

    def describe(self) -> str:
        return f"snapshot {self.snapshot}" if self.snapshot is not None else f"{self.time} UTC"


def parse_as_of(text: str) -> AsOf:
    """``--as-of``: a snapshot id (an integer) or an ISO date/time in UTC."""
    value = text.strip()
    if value.isdigit():
        return AsOf(snapshot=int(value))
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as error:
        raise ConfigError(
            f"--as-of {text!r} is neither a snapshot id (an integer, see `tracerflow store "
            f"snapshots`) nor an ISO date/time such as 2026-11-30 or 2026-11-30T08:00"
        ) from error
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return AsOf(time=moment)
