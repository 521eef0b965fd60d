"""``tracerflow history`` and ``tracerflow compare``: the score history of a series, and two
transcoders prompt by prompt, read from the score database; each with the transcoder quality
metrics beside the scores (``tracerflow.storage.quality``)."""

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from tracerflow.cli.db_option import StoreOption, score_store
from tracerflow.cli.render import (
    OutputFormat,
    csv_text,
    emit,
    json_text,
    rows_text,
    terminal_width,
)
from tracerflow.errors import StorageError, UsageError
from tracerflow.storage.quality import (
    METRICS_HISTORY_COLUMNS,
    MetricsPair,
    compare_metrics,
    metrics_history,
)
from tracerflow.storage.queries import HISTORY_COLUMNS, CompareResult, compare, history
from tracerflow.storage.store import parse_as_of
from tracerflow.storage.subgraphs import SUBGRAPH_COLUMNS, subgraph_rows
from tracerflow.storage.training import CURVE_COLUMNS, training_curve

# Most important first: a narrow terminal leaves out the last ones (cli/render.fitted).
HISTORY_TABLE_COLUMNS = (
    "created_at", "transcoder_source", "transcoder_version", "prompt", "replacement_score",
    "completeness_score", "replacement_change", "completeness_change", "status", "flow_run_id",
)  # fmt: skip
# A table's header, where the column's name is longer than its values need.
TABLE_HEADERS = {"transcoder_version": "version"}
# Beside the version of a series' first score with new weights, in the table format.
NEW_VERSION_MARK = " *"
NEW_VERSION_NOTE = (
    f"{NEW_VERSION_MARK.strip()} new weights: the series' first score since the transcoder's "
    "weights changed (version: the first digits of their hash, column transcoder_version)"
)

COMPARE_COLUMNS = (
    "model_name", "prompt", "a_replacement_score", "b_replacement_score",
    "replacement_difference", "a_completeness_score", "b_completeness_score",
    "completeness_difference", "a_params_hash", "b_params_hash",
)  # fmt: skip

# `history --subgraphs` and compare's saved subgraphs, as a table (csv and json: every column).
SUBGRAPH_TABLE_COLUMNS = (
    "created_at", "transcoder_source", "prompt", "n_pinned_features",
    "subgraph_replacement_score", "subgraph_completeness_score", "graph_replacement_score",
    "graph_completeness_score", "pruned_replacement_score", "pruned_completeness_score", "slug",
    "scored_by",
)  # fmt: skip

# `history --metrics` in a table: per layer (empty: all layers), most important first.
METRICS_LAYER_TABLE_COLUMNS = (
    "created_at", "transcoder_source", "layer", "fvu", "fvu_change", "l0", "dead_share", "kl",
    "top1_agreement", "ce_loss_recovered", "corpus_name", "corpus_n_tokens",
)  # fmt: skip

METRICS_TABLE_COLUMNS = (
    "created_at", "transcoder_source", "corpus_name", "corpus_n_tokens", "fvu", "fvu_change",
    "l0", "dead_share", "kl", "kl_change", "top1_agreement", "ce_loss_recovered",
)  # fmt: skip


class HistoryBy(StrEnum):
    """What ``history`` and ``plot history`` put the scores against."""

    run = "run"
    step = "step"


ByOption = Annotated[
    HistoryBy,
    typer.Option(
        "--by",
        help="run: every score in time order; step: a training run's checkpoints by training "
        "step, each with its mean scores and newest quality metrics (docs/checkpoints.md).",
    ),
]


def history_command(
    transcoder: Annotated[
        str | None,
        typer.Option(
            help="Only this transcoder (source or transcoder id; with --by step, also a "
            "training run's folder)."
        ),
    ] = None,
    prompt: Annotated[str | None, typer.Option(help="Only this prompt (exact text).")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only scores from this date/time on (UTC), e.g. 2025-06-01.")
    ] = None,
    metrics: Annotated[
        bool,
        typer.Option(
            "--metrics",
            help="Only the transcoder quality metrics (every layer, then all layers: layer "
            "empty), in any --format.",
        ),
    ] = False,
    subgraphs: Annotated[
        bool,
        typer.Option(
            "--subgraphs",
            help="Only the saved subgraphs' scores (tracerflow subgraph score, the viewer's "
            "Save), newest first, in any --format; with --transcoder and --as-of only.",
        ),
    ] = False,
    as_of: Annotated[
        str | None,
        typer.Option(
            help="Read a DuckLake store as it was at this snapshot id or UTC time "
            "(`tracerflow store snapshots` lists them)."
        ),
    ] = None,
    suite: Annotated[str | None, typer.Option(help="Only runs of this suite.")] = None,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Only the newest this many scores.")
    ] = None,
    columns: Annotated[
        str | None,
        typer.Option(
            help="The table's columns, comma-separated (csv and json carry every column). "
            f"Default: {','.join(HISTORY_TABLE_COLUMNS)}."
        ),
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    by: ByOption = HistoryBy.run,
    store: StoreOption = None,
) -> None:
    """Every score, newest first, with the change since the previous run of the same series;
    in the table format (cut to fit the terminal), then the transcoder quality metrics (all
    layers) of each run. With --by step: each training run's curve."""
    if by is HistoryBy.step:
        given = {"--prompt": prompt, "--since": since, "--metrics": metrics, "--as-of": as_of}
        given |= {"--suite": suite, "--limit": limit}
        refused = [flag for flag, value in given.items() if value]
        if refused:
            raise UsageError(
                f"--by step shows each checkpoint's mean over its prompts: {', '.join(refused)} "
                "cannot be given with it"
            )
        curve_command(score_store(store), transcoder, columns, output_format)
        return
    at = parse_as_of(as_of) if as_of is not None else None
    if subgraphs:
        others = {"--metrics": metrics, "--prompt": prompt, "--since": since, "--suite": suite,
                  "--limit": limit, "--columns": columns}  # fmt: skip
        given = [name for name, value in others.items() if value not in (None, False)]
        if given:
            raise UsageError(
                f"--subgraphs takes --transcoder, --as-of and --format, not {', '.join(given)}"
            )
        found = subgraph_rows(score_store(store), transcoder=transcoder, as_of=at)
        if not found and output_format is OutputFormat.table:
            typer.echo("no subgraphs match", err=True)
            return
        shown = SUBGRAPH_TABLE_COLUMNS if output_format is OutputFormat.table else SUBGRAPH_COLUMNS
        cells = [[r[c] for c in shown] for r in found]
        emit(rows_text(shown, cells, output_format.value, terminal_width()))
        return
    if metrics:
        shown = METRICS_HISTORY_COLUMNS
        if output_format is OutputFormat.table:  # csv and json carry every column
            shown = chosen_columns(columns, METRICS_HISTORY_COLUMNS, METRICS_LAYER_TABLE_COLUMNS)
        quality = metrics_history(
            score_store(store), transcoder=transcoder, since=since, all_layers_only=False, as_of=at
        )
        cells = [[_metrics_cell(r, c, output_format) for c in shown] for r in quality]
        emit(rows_text(shown, cells, output_format.value, terminal_width()))
        return
    table_columns = chosen_columns(columns, HISTORY_COLUMNS, HISTORY_TABLE_COLUMNS)
    rows = history(
        score_store(store),
        transcoder=transcoder,
        prompt=prompt,
        since=since,
        as_of=at,
        suite=suite,
        limit=limit,
    )
    shown = table_columns if output_format is OutputFormat.table else HISTORY_COLUMNS
    if not rows and output_format is OutputFormat.table:
        typer.echo("no scores match", err=True)
        return
    # Everything is read before anything is printed: a store lost in between ends the command
    # in its one error line, not after half of its answer.
    quality: list[dict[str, Any]] = []
    if output_format is OutputFormat.table and prompt is None:
        quality = metrics_history(score_store(store), transcoder=transcoder, since=since, as_of=at)
    if output_format is OutputFormat.table:
        cells = [[table_cell(r, c) for c in shown] for r in rows]
        marked = "transcoder_version" in shown and any(r["version_changed"] for r in rows)
    else:
        cells, marked = [[r[c] for c in shown] for r in rows], False
    headers = (
        [TABLE_HEADERS.get(c, c) for c in shown] if output_format is OutputFormat.table else shown
    )
    emit(rows_text(headers, cells, output_format.value, terminal_width()))
    if marked:
        typer.echo(NEW_VERSION_NOTE)
    if quality:
        typer.echo("\ntranscoder quality, all layers (tracerflow history --metrics: per layer)")
        typer.echo(
            rows_text(
                METRICS_TABLE_COLUMNS,
                [
                    [Path(r[c]).name if c == "corpus_name" else r[c] for c in METRICS_TABLE_COLUMNS]
                    for r in quality
                ],
                "table",
                terminal_width(),
            )
        )


def table_cell(row: dict[str, Any], column: str) -> Any:
    """A history row's value in the table format: the version of a series' first score with new
    weights carries ``NEW_VERSION_MARK``, so a reader sees where the weights changed."""
    value = row[column]
    if column == "transcoder_version" and value is not None and row["version_changed"]:
        return value + NEW_VERSION_MARK
    return value


def curve_command(
    store: Any, transcoder: str | None, columns: str | None, output_format: OutputFormat
) -> None:
    """``history --by step``: the training curve's rows (``storage.training``)."""
    shown = chosen_columns(columns, CURVE_COLUMNS, CURVE_COLUMNS)
    rows = training_curve(store, transcoder=transcoder)
    if not rows and output_format is OutputFormat.table:
        typer.echo(
            "no checkpoint with a training step is scored"
            + (f" under {transcoder}" if transcoder else "")
            + "; score a folder of checkpoints or a glob (docs/checkpoints.md)",
            err=True,
        )
        return
    if output_format is not OutputFormat.table:
        shown = [*CURVE_COLUMNS, *sorted(set(rows[0]) - set(CURVE_COLUMNS))] if rows else shown
    emit(
        rows_text(
            shown,
            [[row.get(column) for column in shown] for row in rows],
            output_format.value,
            terminal_width() if output_format is OutputFormat.table else None,
        )
    )


def _metrics_cell(row: dict[str, Any], column: str, output_format: OutputFormat) -> Any:
    """A metrics row's cell: in a table the corpus is its file's name; csv and json keep all."""
    value = row[column]
    if column == "corpus_name" and output_format is OutputFormat.table and value:
        return Path(value).name
    return value


def chosen_columns(
    given: str | None, known: Sequence[str], default: Sequence[str]
) -> Sequence[str]:
    """``--columns`` read against the columns a command knows; ``UsageError`` naming them."""
    if given is None:
        return default
    chosen = [name.strip() for name in given.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown or not chosen:
        raise UsageError(
            f"--columns: unknown column {', '.join(map(repr, unknown)) or '(none given)'}; "
            f"known: {', '.join(known)}"
        )
    return chosen


def compare_command(
    source_a: Annotated[str, typer.Argument(help="Transcoder A (the baseline).")],
    source_b: Annotated[str, typer.Argument(help="Transcoder B (the candidate).")],
    prompts_file: Annotated[
        Path | None, typer.Option(help="Only these prompts: a text file, one prompt per line.")
    ] = None,
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    store: StoreOption = None,
) -> None:
    """Compare two transcoders prompt by prompt: B − A with its mean and 95% t interval."""
    prompts = None
    if prompts_file is not None:
        try:
            lines = prompts_file.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise StorageError(f"cannot read --prompts-file {prompts_file}: {error}") from error
        prompts = [line for line in lines if line.strip()]
    result = compare(score_store(store), source_a, source_b, prompts=prompts)
    quality = compare_metrics(score_store(store), _artifacts_dir(), source_a, source_b)
    saved = [
        row
        for source in (source_a, source_b)
        for row in subgraph_rows(score_store(store), transcoder=source)
    ]
    if output_format is OutputFormat.json:
        emit(
            json_text(
                {
                    "source_a": result.source_a,
                    "source_b": result.source_b,
                    "replacement_difference": vars(result.replacement),
                    "completeness_difference": vars(result.completeness),
                    "n_params_differ": result.n_params_differ,
                    "missing_prompts": result.missing_prompts,
                    "rows": result.rows,
                    "metrics": [_pair_json(pair) for pair in quality],
                    "subgraphs": [{c: row[c] for c in SUBGRAPH_COLUMNS} for row in saved],
                }
            )
        )
        return
    if output_format is OutputFormat.csv:
        emit(csv_text(COMPARE_COLUMNS, [[row[c] for c in COMPARE_COLUMNS] for row in result.rows]))
    else:
        shown = [c for c in COMPARE_COLUMNS if not c.endswith("params_hash")]
        typer.echo(f"A = {source_a}\nB = {source_b}\n")
        typer.echo(rows_text(shown, [[row[c] for c in shown] for row in result.rows], "table"))
        typer.echo("")
        typer.echo(_interval_line("replacement score", result, "replacement"))
        typer.echo(_interval_line("completeness score", result, "completeness"))
        for pair in quality:
            typer.echo("")
            typer.echo(_metrics_text(pair))
        if saved:
            typer.echo("\nsaved subgraphs of A and B (tracerflow history --subgraphs)")
            shown = SUBGRAPH_TABLE_COLUMNS
            cells = [[row[c] for c in shown] for row in saved]
            typer.echo(rows_text(shown, cells, "table", terminal_width()))
    if result.n_params_differ:
        typer.echo(
            f"note: {result.n_params_differ} pair(s) were scored under different parameters",
            err=True,
        )
    if result.missing_prompts:
        typer.echo(
            f"note: {len(result.missing_prompts)} prompt(s) lack a score from A or B", err=True
        )


def _artifacts_dir() -> Path:
    from tracerflow.settings import get_settings

    return get_settings().artifacts_dir


def _pair_json(pair: MetricsPair) -> dict[str, object]:
    return {
        "model_name": pair.model_name,
        "corpus_name": pair.corpus_name,
        "corpus_hash": pair.corpus_hash,
        "n_tokens": pair.n_tokens,
        "a": pair.a,
        "b": pair.b,
        "difference": pair.difference,
        "intervals": {name: vars(interval) for name, interval in pair.intervals.items()},
        "note": pair.note,
    }


def _metrics_text(pair: MetricsPair) -> str:
    """A and B's all-layers metrics on the same tokens, B − A, and its interval where known."""
    header = (
        f"transcoder quality on {pair.corpus_name} ({pair.n_tokens} tokens, {pair.model_name}, "
        "the same tokens for A and B)"
    )
    rows = []
    for name in pair.a:
        interval = pair.intervals.get(name)
        ci = (
            f"[{interval.ci_low:+.4f}, {interval.ci_high:+.4f}]"
            if interval is not None and interval.ci_low is not None
            else "-"
        )
        rows.append([name, pair.a[name], pair.b[name], pair.difference[name], ci])
    table = rows_text(("metric", "a", "b", "difference", "95% CI (per token)"), rows, "table")
    return header + "\n" + table + (f"\nnote: {pair.note}" if pair.note else "")


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
