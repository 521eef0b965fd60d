"""The score database's commands: `history`, `compare`, `sql`, `plot history`.

`register(app)` adds them to the main `tracerflow` app. Every command reads the database at
``$TRACERFLOW_HOME/scores.duckdb`` unless ``--db`` names another, opens it read-only, and turns
a `TracerflowError` into one line on stderr and exit status 1.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import os
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer

from tracerflow.errors import StorageError, TracerflowError
from tracerflow.settings import get_settings
from tracerflow.storage.queries import HISTORY_COLUMNS, CompareResult, compare, history, run_sql

P = ParamSpec("P")
R = TypeVar("R")


class OutputFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class SqlFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"
    parquet = "parquet"


DbOption = Annotated[
    Path | None,
    typer.Option("--db", help="Score database [default: $TRACERFLOW_HOME/scores.duckdb]."),
]


def _db(db: Path | None) -> Path:
    return db if db is not None else get_settings().database_path


def _user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """A TracerflowError becomes one line on stderr and exit status 1, never a traceback."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except TracerflowError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None

    return run


# Rendering --------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _signed(value: Any) -> str:
    return f"{value:+.4f}" if isinstance(value, float) else _text(value)


def render_table(columns: Sequence[str], rows: Sequence[Sequence[Any]], max_width: int = 48) -> str:
    """An aligned text table; long cells are cut with an ellipsis (use csv/json for all of it)."""

    def cell(column: str, value: Any) -> str:
        text = _signed(value) if column.endswith(("_change", "difference")) else _text(value)
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cell(c, v) for c, v in zip(columns, row, strict=True)] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def render_csv(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(
            "" if v is None else v.isoformat() if isinstance(v, datetime) else v for v in row
        )
    return buffer.getvalue()


def render_json(value: Any) -> str:
    return json.dumps(
        value, indent=2, default=lambda v: v.isoformat() if isinstance(v, datetime) else str(v)
    )


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` name one file: the same resolved path (symlinks, ``..``) or,
    when both exist, the same inode (hard links)."""
    if a.resolve() == b.resolve():
        return True
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_out_path(out: Path, db_path: Path, force: bool) -> None:
    """Refuse an ``--out`` that would destroy something: the score database (or its WAL or lock
    file) under any name, a folder, or an existing file unless ``force``.

    Raises:
        StorageError: one line naming ``out`` and why it is refused.
    """
    for protected in (db_path, Path(f"{db_path}.wal"), Path(f"{db_path}.lock")):
        if _same_file(out, protected):
            raise StorageError(
                f"--out {out} is the score database {protected}; write the result elsewhere"
            )
    if out.is_dir():
        raise StorageError(f"--out {out} is a folder; name a file")
    if out.exists() and not force:
        raise StorageError(f"--out {out} exists; add --force to replace it")


def _write_atomically(out: Path, write: Callable[[Path], object]) -> None:
    """``write(temp)`` a temporary sibling of ``out``, then rename it onto ``out``: a failure
    leaves ``out`` as it was and no half-written file. An OSError becomes a StorageError."""
    temp = out.parent / f".{out.name}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        write(temp)
        os.replace(temp, out)
    except OSError as error:
        raise StorageError(f"cannot write --out {out}: {error.strerror or error}") from error
    finally:
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)


def _emit(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text.rstrip("\n"))
    else:
        content = text if text.endswith("\n") else text + "\n"
        _write_atomically(out, lambda temp: temp.write_text(content, encoding="utf-8"))
        typer.echo(f"wrote {out}", err=True)


def _render(columns: Sequence[str], rows: Sequence[Sequence[Any]], output_format: str) -> str:
    if output_format == "csv":
        return render_csv(columns, rows)
    if output_format == "json":
        return render_json([dict(zip(columns, row, strict=True)) for row in rows])
    return render_table(columns, rows)


def _write_parquet(columns: list[str], rows: list[tuple[Any, ...]], out: Path | None) -> None:
    if out is None:
        raise StorageError("--format parquet writes a file: add --out FILE.parquet")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as error:
        raise StorageError("--format parquet needs pyarrow: pip install pyarrow") from error
    table = pa.table({c: [row[i] for row in rows] for i, c in enumerate(columns)})
    _write_atomically(out, lambda temp: pq.write_table(table, temp))
    typer.echo(f"wrote {len(rows)} rows to {out}", err=True)


# Commands ---------------------------------------------------------------------------------

HISTORY_TABLE_COLUMNS = (
    "created_at", "transcoder_source", "prompt", "status", "replacement_score",
    "replacement_change", "completeness_score", "completeness_change", "flow_run_id",
)  # fmt: skip


@_user_errors
def history_command(
    transcoder: Annotated[
        str | None, typer.Option(help="Only this transcoder (source or transcoder id).")
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="Only this prompt (exact text).")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only scores from this date/time on (UTC), e.g. 2025-06-01.")
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    db: DbOption = None,
) -> None:
    """Every score, newest first, with the change since the previous run of the same series."""
    rows = history(_db(db), transcoder=transcoder, prompt=prompt, since=since)
    columns = HISTORY_TABLE_COLUMNS if output_format is OutputFormat.table else HISTORY_COLUMNS
    if not rows and output_format is OutputFormat.table:
        typer.echo("no scores match", err=True)
        return
    _emit(_render(columns, [[r[c] for c in columns] for r in rows], output_format.value), None)


COMPARE_COLUMNS = (
    "model_name", "prompt", "a_replacement_score", "b_replacement_score",
    "replacement_difference", "a_completeness_score", "b_completeness_score",
    "completeness_difference", "a_params_hash", "b_params_hash",
)  # fmt: skip


def _interval_line(label: str, result: CompareResult, which: str) -> str:
    interval = getattr(result, which)
    if interval.mean is None:
        return f"{label}: no paired values"
    ci = (
        f"95% CI [{interval.ci_low:+.4f}, {interval.ci_high:+.4f}]"
        if interval.ci_low is not None
        else "no interval from one prompt"
    )
    return f"{label} (B − A): mean {interval.mean:+.4f}, {ci}, n = {interval.n} prompts"


@_user_errors
def compare_command(
    source_a: Annotated[str, typer.Argument(help="Transcoder A (the baseline).")],
    source_b: Annotated[str, typer.Argument(help="Transcoder B (the candidate).")],
    prompts_file: Annotated[
        Path | None, typer.Option(help="Only these prompts: a text file, one prompt per line.")
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    db: DbOption = None,
) -> None:
    """Compare two transcoders prompt by prompt: B − A with its mean and 95% t interval."""
    prompts = None
    if prompts_file is not None:
        try:
            lines = prompts_file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise StorageError(f"cannot read --prompts-file {prompts_file}: {error}") from error
        prompts = [line for line in lines if line.strip()]
    result = compare(_db(db), source_a, source_b, prompts=prompts)
    if output_format is OutputFormat.json:
        _emit(
            render_json(
                {
                    "source_a": result.source_a,
                    "source_b": result.source_b,
                    "replacement_difference": vars(result.replacement),
                    "completeness_difference": vars(result.completeness),
                    "n_params_differ": result.n_params_differ,
                    "missing_prompts": result.missing_prompts,
                    "rows": result.rows,
                }
            ),
            None,
        )
        return
    rows = [[row[c] for c in COMPARE_COLUMNS] for row in result.rows]
    if output_format is OutputFormat.csv:
        _emit(render_csv(COMPARE_COLUMNS, rows), None)
    else:
        shown = [c for c in COMPARE_COLUMNS if not c.endswith("params_hash")]
        typer.echo(f"A = {source_a}\nB = {source_b}\n")
        typer.echo(render_table(shown, [[row[c] for c in shown] for row in result.rows]))
        typer.echo("")
        typer.echo(_interval_line("replacement score", result, "replacement"))
        typer.echo(_interval_line("completeness score", result, "completeness"))
    if result.n_params_differ:
        typer.echo(
            f"note: {result.n_params_differ} pair(s) were scored under different parameters",
            err=True,
        )
    if result.missing_prompts:
        typer.echo(
            f"note: {len(result.missing_prompts)} prompt(s) lack a score from A or B", err=True
        )


@_user_errors
def sql_command(
    query: Annotated[
        str, typer.Argument(help='One read query, e.g. "SELECT * FROM latest_scores".')
    ],
    output_format: Annotated[SqlFormat, typer.Option("--format")] = SqlFormat.table,
    out: Annotated[
        Path | None,
        typer.Option(help="Write the result to this file (never the database, never a folder)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Let --out replace a file.")] = False,
    db: DbOption = None,
) -> None:
    """Run a read-only SQL query over the score database (see docs/database.md)."""
    if out is not None:
        check_out_path(out, _db(db), force)
    columns, rows = run_sql(_db(db), query)
    if output_format is SqlFormat.parquet:
        _write_parquet(columns, rows, out)
        return
    _emit(_render(columns, rows, output_format.value), out)


@_user_errors
def plot_history_command(
    out: Annotated[
        Path, typer.Option(help="history.png (a chart) or report.html (chart + tables).")
    ],
    transcoder: Annotated[
        str | None, typer.Option(help="Only this transcoder (source or transcoder id).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Only scores from this date on (UTC).")] = None,
    db: DbOption = None,
) -> None:
    """Chart each transcoder's mean scores per run over time."""
    # Imported here: matplotlib costs a second, and the other commands do not need it.
    from tracerflow.storage.report import write_history_report

    written = write_history_report(_db(db), out, transcoder=transcoder, since=since)
    typer.echo(f"wrote {written}")


def register(app: typer.Typer) -> None:
    """Add `history`, `compare`, `sql` and `plot history` to the `tracerflow` app."""
    app.command("history")(history_command)
    app.command("compare")(compare_command)
    app.command("sql")(sql_command)
    plot_app = typer.Typer(help="Charts of the score history.", no_args_is_help=True)
    plot_app.command("history")(plot_history_command)
    app.add_typer(plot_app, name="plot")


if __name__ == "__main__":  # `python -m tracerflow.storage.cli ...` until the main app mounts it
    standalone = typer.Typer(no_args_is_help=True)
    register(standalone)
    standalone(prog_name="tracerflow")
