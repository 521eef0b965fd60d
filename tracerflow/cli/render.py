"""How commands print what they found: aligned text tables (drawn by rich), csv and json, on
stdout or atomically into an ``--out`` file."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tracerflow.cells import cell_text
from tracerflow.errors import StorageError
from tracerflow.fsutil import atomic_file
from tracerflow.storage.store import LakeStore, Store

# A rule under the header and nothing else, in ASCII so a table reads the same in any terminal,
# file or pipe.
_HEADER_RULE = box.Box(
    "    \n"  # top edge
    "    \n"  # header cells
    " -  \n"  # under the header: dashes, a space between columns
    "    \n"  # between rows
    "    \n"  # row cells
    "    \n"  # above a footer
    "    \n"  # footer cells
    "    \n",  # bottom edge
    ascii=True,
)

# Wide enough that rich never wraps or cuts a cell: the commands decide what a cell shows.
_UNLIMITED_WIDTH = 100_000


def text_table(
    columns: Sequence[str], rows: Sequence[Sequence[str]], *, header: bool = True
) -> str:
    """``rows`` of ready-made cell texts, aligned under ``columns``; trailing spaces removed."""
    table = Table(
        *columns,
        box=_HEADER_RULE,
        show_header=header,
        show_edge=False,
        pad_edge=False,
        padding=(0, 1, 0, 0),
    )
    for row in rows:
        table.add_row(*(Text(cell, no_wrap=True) for cell in row))
    console = Console(
        file=io.StringIO(),
        width=_UNLIMITED_WIDTH,
        color_system=None,
        highlight=False,
        markup=False,
        emoji=False,
    )
    with console.capture() as captured:
        console.print(table)
    return "\n".join(line.rstrip() for line in captured.get().splitlines())


# A column fitted to the terminal keeps at least this many characters (or its header's).
_MIN_FITTED = 10
# Characters between two columns of ``text_table``: the cell's right padding and the box's divider.
_GAP = 2


@dataclass(frozen=True)
class Fitted:
    """A table cut to a width: the columns it kept (the first ones), their cells, and the
    columns that did not fit even at their narrowest."""

    columns: list[str]
    rows: list[list[str]]
    hidden: list[str]


def fitted(columns: Sequence[str], rows: Sequence[Sequence[str]], width: int) -> Fitted:
    """``rows`` cut to fit ``width`` characters as ``text_table`` draws them: the widest column
    gives a character first (its cells end in "…"), down to ``_MIN_FITTED`` or its header's
    length; columns that still do not fit are left out from the right, so a command lists its
    columns most important first."""
    widths = [
        max([len(column), *(len(row[i]) for row in rows)]) for i, column in enumerate(columns)
    ]
    floors = [min(w, max(_MIN_FITTED, len(c))) for w, c in zip(widths, columns, strict=True)]
    kept = len(columns)
    while kept > 1 and sum(floors[:kept]) + _GAP * (kept - 1) > width:
        kept -= 1
    widths, floors = widths[:kept], floors[:kept]
    excess = sum(widths) + _GAP * (kept - 1) - width
    while excess > 0:
        widest = max(range(kept), key=lambda i: widths[i] if widths[i] > floors[i] else -1)
        if widths[widest] <= floors[widest]:
            break
        widths[widest] -= 1
        excess -= 1
    return Fitted(
        columns=list(columns[:kept]),
        rows=[[_cut(cell, w) for cell, w in zip(row, widths, strict=False)] for row in rows],
        hidden=list(columns[kept:]),
    )


def terminal_width() -> int | None:
    """The width tables on stdout fit: the terminal's (``COLUMNS`` when set); None when stdout
    is a pipe or a file and ``COLUMNS`` is not set (the whole table then)."""
    import shutil
    import sys

    if os.environ.get("COLUMNS", "").isdigit() or sys.stdout.isatty():
        return shutil.get_terminal_size().columns
    return None


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def csv_text(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """RFC 4180 csv with a header row; ``None`` is empty, a datetime is ISO 8601."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            "" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in row
        )
    return buffer.getvalue()


def json_text(value: Any) -> str:
    """Indented json; a datetime is ISO 8601, anything else json lacks is its ``str``."""
    return json.dumps(
        value, indent=2, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)
    )


def emit(text: str, out: Path | None = None) -> None:
    """Print ``text`` on stdout, or write it to ``out`` (atomically) and say so on stderr."""
    if out is None:
        typer.echo(text.rstrip("\n"))
    else:
        content = text if text.endswith("\n") else text + "\n"
        write_atomically(out, lambda temp: temp.write_text(content, encoding="utf-8"))
        typer.echo(f"wrote {out}", err=True)


def write_atomically(out: Path, write: Callable[[Path], object]) -> None:
    """``write(temp)`` a temporary sibling of ``out``, then rename it onto ``out``: a failure
    leaves ``out`` as it was and no half-written file. An OSError becomes a StorageError. Its
    folder must exist (``check_out_path``)."""
    try:
        with atomic_file(out) as temp:
            write(temp)
    except OSError as error:
        raise StorageError(f"cannot write --out {out}: {error.strerror or error}") from error


def check_out_path(out: Path, store: Store, force: bool) -> None:
    """Refuse an ``--out`` that would destroy something or write where it must not: the score
    database (or its WAL or lock file) under any name, a file in a lake's data folder, a
    symlink (it would lead the write elsewhere), a folder or a special file (a device, a FIFO),
    an existing file unless ``force``, or a folder that does not exist (no ``--out`` makes
    folders). Every command's ``--out`` passes here before it computes anything.

    Raises:
        StorageError: one line naming ``out`` and why it is refused.
    """
    if isinstance(store, LakeStore):
        if store.data_path is not None and out.resolve().is_relative_to(store.data_path):
            raise StorageError(
                f"--out {out} is inside the lake's data folder {store.data_path}; write the "
                "result elsewhere"
            )
        protected_files: tuple[Path, ...] = ()
    else:
        db_path = store.path
        protected_files = (db_path, Path(f"{db_path}.wal"), Path(f"{db_path}.lock"))
    for protected in protected_files:
        if _same_file(out, protected):
            raise StorageError(
                f"--out {out} is the score database {protected}; write the result elsewhere"
            )
    if out.is_symlink():
        raise StorageError(f"--out {out} is a symlink; name the file itself")
    if out.is_dir():
        raise StorageError(f"--out {out} is a folder; name a file")
    if out.exists() and not out.is_file():
        raise StorageError(f"--out {out} is a special file, not a regular one; name a file")
    if out.exists() and not force:
        raise StorageError(f"--out {out} exists; add --force to replace it")
    if out.parent.exists() and not out.parent.is_dir():
        raise StorageError(f"--out {out}: {out.parent} is not a folder")
    if not out.parent.is_dir():
        raise StorageError(f"--out {out}: the folder {out.parent} does not exist")


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same resolved path (symlinks, ``..``) or,
    when both exist, the same inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


class OutputFormat(StrEnum):
    """``--format`` of the commands that print rows."""

    table = "table"
    csv = "csv"
    json = "json"


def rows_text(
    columns: Sequence[str],
    rows: Sequence[Sequence[Any]],
    output_format: str,
    width: int | None = None,
) -> str:
    """Rows of the score database as a text table (cut to fit ``width`` when given), csv, or
    json (a list of objects); csv and json always carry every character."""
    if output_format == "csv":
        return csv_text(columns, rows)
    if output_format == "json":
        return json_text([dict(zip(columns, row, strict=True)) for row in rows])
    cells = [
        [_cell(column, value) for column, value in zip(columns, row, strict=True)] for row in rows
    ]
    if width is None:
        return text_table(columns, cells)
    fit = fitted(columns, cells, width)
    table = text_table(fit.columns, fit.rows)
    if fit.hidden:
        note = f"(not shown: {', '.join(fit.hidden)}; see --columns, --format csv)"
        table += "\n" + _cut(note, width)
    return table


# A table shows at most this many characters of a cell; csv and json show all of it.
_MAX_CELL = 48


def _cell(column: str, value: Any) -> str:
    return _cut(cell_text(value, signed=column.endswith(("_change", "difference"))), _MAX_CELL)
