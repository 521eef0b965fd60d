"""``tracerflow plot history``: a chart (png) or report (html) of the score history;
``tracerflow plot metrics``: per-layer FVU, L0 and feature density of each transcoder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracerflow.cli.db_option import StoreOption, score_store
from tracerflow.cli.history import ByOption, HistoryBy
from tracerflow.cli.render import check_out_path
from tracerflow.errors import UsageError

ForceOption = Annotated[bool, typer.Option("--force", help="Let --out replace a file.")]

plot_app = typer.Typer(help="Charts of the score history.", no_args_is_help=True)


@plot_app.command("history")
def plot_history_command(
    out: Annotated[
        Path, typer.Option(help="history.png (a chart) or report.html (chart + tables).")
    ],
    transcoder: Annotated[
        str | None, typer.Option(help="Only this transcoder (source or transcoder id).")
    ] = None,
    since: Annotated[str | None, typer.Option(help="Only scores from this date on (UTC).")] = None,
    force: ForceOption = False,
    by: ByOption = HistoryBy.run,
    store: StoreOption = None,
) -> None:
    """Chart each transcoder's mean scores per run over time; with --by step, each training
    run's scores and quality metrics against the training step."""
    # Imported here: matplotlib costs a second, and the other commands do not need it.
    from tracerflow.storage.report import write_history_report, write_training_curve

    check_out_path(out, score_store(store), force)
    if by is HistoryBy.step:
        if since is not None:
            raise UsageError("--by step charts each checkpoint's newest scores: no --since")
        written = write_training_curve(score_store(store), out, transcoder=transcoder)
    else:
        written = write_history_report(score_store(store), out, transcoder=transcoder, since=since)
    typer.echo(f"wrote {written}")


@plot_app.command("metrics")
def plot_metrics_command(
    out: Annotated[Path, typer.Option(help="metrics.png")],
    transcoder: Annotated[
        str | None, typer.Option(help="Only this transcoder (source or transcoder id).")
    ] = None,
    force: ForceOption = False,
    store: StoreOption = None,
) -> None:
    """Chart each transcoder's newest per-layer FVU and L0, and its feature density histogram."""
    from tracerflow.storage.report import write_metrics_chart

    check_out_path(out, score_store(store), force)
    written = write_metrics_chart(score_store(store), out, transcoder=transcoder)
    typer.echo(f"wrote {written}")
