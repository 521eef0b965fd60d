"""Charts and a self-contained HTML report of the score history (matplotlib, no display needed).

The HTML report is one file: the chart is embedded as a base64 PNG, the tables are plain HTML,
nothing is fetched from anywhere, so it can be mailed, attached to a Prefect artifact or opened
offline.
"""

from __future__ import annotations

import base64
import html
import io
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from statistics import fmean
from typing import Any

from tracerflow.cells import cell_text
from tracerflow.errors import StorageError
from tracerflow.fsutil import write_bytes_atomically, write_text_atomically
from tracerflow.storage.queries import history, transcoder_summary
from tracerflow.storage.store import StoreLike

SCORES_PLOTTED = (
    ("replacement_score", "replacement score"),
    ("completeness_score", "completeness"),
)


def _per_run_means(
    rows: list[dict[str, Any]], score: str
) -> dict[str, list[tuple[datetime, float]]]:
    """Per transcoder and suite, the mean of ``score`` over each run's successful prompts, at the
    run's start time (every transcoder of one run at the same time; the first score's time for
    runs that recorded no start).

    Series are split by suite because a mean over different prompt sets is not comparable.
    """
    per_run: dict[tuple[str, str], list[tuple[datetime, float]]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok" and row[score] is not None:
            label = _series_label(row)
            at = row.get("run_started_at") or row["created_at"]
            per_run[(label, row["flow_run_id"])].append((at, row[score]))
    series: dict[str, list[tuple[datetime, float]]] = defaultdict(list)
    for (label, _), points in per_run.items():
        series[label].append((min(t for t, _ in points), fmean(v for _, v in points)))
    return {label: sorted(points) for label, points in sorted(series.items())}


@dataclass(frozen=True)
class VersionBoundary:
    """Where a plotted series (a transcoder source and suite) went on with new weights: the
    first run scored with ``version`` after runs scored with ``previous``."""

    label: str  # the series' label, as in the chart's legend
    at: datetime  # that run's start
    previous: str
    version: str


def version_boundaries(rows: list[dict[str, Any]]) -> list[VersionBoundary]:
    """Each plotted series' changes of weights, in time order: a run whose successful scores
    were computed with other weights (``transcoder_version``) than the series' previous run's.
    A run that scored one source with two versions (which one run does not do) counts by its
    newest score's."""
    starts: dict[tuple[str, str], datetime] = {}
    newest: dict[tuple[str, str], tuple[datetime, str]] = {}
    for row in rows:
        if row["status"] != "ok" or row.get("transcoder_version") is None:
            continue
        key = (_series_label(row), row["flow_run_id"])
        at = row.get("run_started_at") or row["created_at"]
        starts[key] = min(starts.get(key, at), at)
        if key not in newest or row["created_at"] > newest[key][0]:
            newest[key] = (row["created_at"], row["transcoder_version"])
    series: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for key, (_, version) in newest.items():
        series[key[0]].append((starts[key], version))
    boundaries = []
    for label, runs in sorted(series.items()):
        for (_, previous), (at, version) in pairwise(sorted(runs)):
            if version != previous:
                boundaries.append(VersionBoundary(label, at, previous, version))
    return sorted(boundaries, key=lambda b: (b.at, b.label))


def _series_label(row: dict[str, Any]) -> str:
    return f"{row['transcoder_source']} ({row['suite_name'] or 'no suite'})"


def history_png(rows: list[dict[str, Any]]) -> bytes:
    """A PNG of ``history_figure``."""
    buffer = io.BytesIO()
    history_figure(rows).savefig(buffer, format="png", dpi=110)
    return buffer.getvalue()


def history_figure(rows: list[dict[str, Any]]) -> Any:
    """A matplotlib ``Figure``, one panel a score, one line per transcoder and suite: its mean
    per run over time."""
    if not any(row["status"] == "ok" for row in rows):
        raise StorageError("no successful scores to plot; widen --transcoder / --since")
    # The object API, not pyplot: no global backend, no display, safe inside a flow worker.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.dates import AutoDateLocator, DateFormatter
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 6.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(SCORES_PLOTTED), 1, sharex=True)
    boundaries = version_boundaries(rows)
    for ax, (score, score_label) in zip(axes, SCORES_PLOTTED, strict=True):
        colours = {}
        for series_label, points in _per_run_means(rows, score).items():
            times, values = zip(*points, strict=True)
            (line,) = ax.plot(times, values, marker="o", label=series_label)
            colours[series_label] = line.get_color()
        for boundary in boundaries:  # new weights: a dashed line in the series' colour
            ax.axvline(
                boundary.at, color=colours.get(boundary.label, "grey"), linestyle="--", alpha=0.7
            )
        ax.set_ylabel(f"mean {score_label}")
        ax.grid(alpha=0.3)
    for boundary in boundaries:
        axes[0].annotate(
            f"new weights {boundary.version}",
            xy=(boundary.at, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize="x-small",
        )
    axes[0].set_title("Score history: mean over each run's prompts")
    axes[0].legend(fontsize="small", loc="best")
    axes[-1].set_xlabel("run started at (UTC)")
    axes[-1].xaxis.set_major_locator(AutoDateLocator(minticks=3, maxticks=8))
    axes[-1].xaxis.set_major_formatter(DateFormatter("%Y-%m-%d %H:%M"))
    times = {
        at for series in _per_run_means(rows, SCORES_PLOTTED[0][0]).values() for at, _ in series
    }
    if len(times) == 1:  # one run: an hour either side, not years of empty axis
        (only,) = times
        axes[-1].set_xlim(only - timedelta(hours=1), only + timedelta(hours=1))
    figure.autofmt_xdate()
    return figure


def metrics_figure(rows: list[dict[str, Any]]) -> Any:
    """A matplotlib ``Figure``: per-layer FVU, per-layer L0 and the log10-density histogram (all
    layers) of each transcoder's newest metrics (``quality.latest_layer_metrics`` rows), one
    line per transcoder, model and evaluation corpus."""
    if not rows:
        raise StorageError("no transcoder metrics recorded; run a flow first (tracerflow demo)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from tracerflow.evaluation.results import DENSITY_LOG10_BIN_WIDTH, DENSITY_LOG10_EDGES

    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        corpus = Path(row["corpus_name"]).name
        series[f"{row['transcoder_source']} ({corpus}, {row['model_name']})"].append(row)
    figure = Figure(figsize=(9, 9), layout="constrained")
    FigureCanvasAgg(figure)
    fvu_ax, l0_ax, density_ax = figure.subplots(3, 1)
    centres = [edge + DENSITY_LOG10_BIN_WIDTH / 2 for edge in DENSITY_LOG10_EDGES[:-1]]
    for label, layers in sorted(series.items()):
        layer_numbers = [row["layer"] for row in layers]
        fvu_ax.plot(layer_numbers, [row["fvu"] for row in layers], marker="o", label=label)
        l0_ax.plot(layer_numbers, [row["l0"] for row in layers], marker="o", label=label)
        counts = [sum(row["density_histogram"][b] for row in layers) for b in range(len(centres))]
        density_ax.step(centres, counts, where="mid", label=label)
    fvu_ax.set_title("Transcoder quality: newest metrics per layer")
    fvu_ax.set_ylabel("FVU")
    l0_ax.set_ylabel("L0 (active features per token)")
    for ax in (fvu_ax, l0_ax):
        ax.set_xlabel("layer")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    density_ax.set_xlabel("log10 feature density (all layers; dead features not shown)")
    density_ax.set_ylabel("features")
    density_ax.grid(alpha=0.3)
    fvu_ax.legend(fontsize="small", loc="best")
    return figure


# The training curve's panels: (column, axis label), scores first, then quality metrics.
CURVE_PANELS = (
    ("replacement_mean", "mean replacement score"),
    ("completeness_mean", "mean completeness"),
    ("fvu", "FVU (all layers)"),
    ("l0", "L0 (summed over layers)"),
    ("kl", "KL to the original"),
    ("ce_loss_recovered", "CE loss recovered"),
)


def curve_series(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """``storage.training.training_curve`` rows as one series per training run, model,
    parameter set and evaluation corpus, each in step order."""
    series: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        corpus = f", {row['corpus_name']}" if row.get("corpus_name") else ""
        label = f"{row['training_run']} ({row['model_name']}{corpus}, {row['params_hash'][:8]})"
        series[label].append(row)
    return {
        label: sorted(points, key=lambda row: row["training_step"])
        for label, points in sorted(series.items())
    }


def training_curve_figure(rows: list[dict[str, Any]]) -> Any:
    """A matplotlib ``Figure`` of a training run's curve: one panel per ``CURVE_PANELS`` entry,
    the training step on the x axis, one line per ``curve_series`` series."""
    if not rows:
        raise StorageError(
            "no checkpoint with a training step is scored; score a folder of checkpoints or a "
            "glob (docs/checkpoints.md)"
        )
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(11, 7.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2, 3, sharex=True).flatten()
    for ax, (column, label) in zip(axes, CURVE_PANELS, strict=True):
        for series_label, points in curve_series(rows).items():
            drawn = [
                (row["training_step"], row[column]) for row in points if row[column] is not None
            ]
            if drawn:
                steps, values = zip(*drawn, strict=True)
                ax.plot(steps, values, marker="o", label=series_label)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    for ax in axes[3:]:
        ax.set_xlabel("training step")
    figure.suptitle("Training curve: each checkpoint's mean scores and quality metrics")
    axes[0].legend(fontsize="x-small", loc="best")
    return figure


def write_training_curve(store: StoreLike, out: Path, transcoder: str | None = None) -> Path:
    """Write the training curve chart (``training_curve_figure``) to ``out``: a ``.png``, or a
    self-contained ``.html`` with the chart and its rows."""
    from tracerflow.storage.training import CURVE_COLUMNS, training_curve

    suffix = out.suffix.lower()
    if suffix not in (".png", ".html"):
        raise StorageError(f"--out {out} must end in .png (a chart) or .html (a report)")
    rows = training_curve(store, transcoder=transcoder)
    buffer = io.BytesIO()
    training_curve_figure(rows).savefig(buffer, format="png", dpi=110)
    if suffix == ".png":
        write_bytes_atomically(out, buffer.getvalue())
        return out
    png = base64.b64encode(buffer.getvalue()).decode("ascii")
    write_text_atomically(
        out,
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>tracerflow training curve</title></head><body>"
        f'<img alt="training curve" src="data:image/png;base64,{png}">'
        f"{_html_table(rows, list(CURVE_COLUMNS))}</body></html>\n",
    )
    return out


def write_metrics_chart(store: StoreLike, out: Path, transcoder: str | None = None) -> Path:
    """Write the per-layer metrics chart (``metrics_figure``) to ``out`` (``.png``)."""
    from tracerflow.storage.quality import latest_layer_metrics

    if out.suffix.lower() != ".png":
        raise StorageError(f"--out {out} must end in .png")
    figure = metrics_figure(latest_layer_metrics(store, transcoder=transcoder))
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    write_bytes_atomically(out, buffer.getvalue())
    return out


def _cell(value: Any) -> str:
    return html.escape(cell_text(value))


def _html_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_cell(row.get(c))}</td>" for c in columns) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


SUMMARY_COLUMNS = [
    "transcoder_source", "model_name", "n_prompts", "replacement_mean", "replacement_ci_low",
    "replacement_ci_high", "replacement_min", "replacement_max", "completeness_mean",
    "completeness_ci_low", "completeness_ci_high",
]  # fmt: skip
HISTORY_TABLE_COLUMNS = [
    "created_at", "transcoder_source", "transcoder_version", "prompt", "status",
    "replacement_score", "replacement_change", "completeness_score", "completeness_change",
    "flow_run_id",
]  # fmt: skip
BOUNDARY_COLUMNS = ["label", "at", "previous", "version"]


# Replacement and completeness scores are fractions (docs/scores.md): a t interval of their mean
# can reach past 0 or 1 on few, spread prompts, which no score can. The report shows the interval
# clipped to [0, 1]; the transcoder_summary view keeps the t interval as computed.
SCORE_RANGE = (0.0, 1.0)


def clipped_to_score_range(summary_row: dict[str, Any]) -> dict[str, Any]:
    """``summary_row`` with each ``*_ci_low``/``*_ci_high`` clipped to ``SCORE_RANGE``."""
    low, high = SCORE_RANGE
    clipped = dict(summary_row)
    for column, value in summary_row.items():
        if value is not None and column.endswith(("_ci_low", "_ci_high")):
            clipped[column] = min(max(value, low), high)
    return clipped


def history_html(
    rows: list[dict[str, Any]], summary: list[dict[str, Any]], title: str = "tracerflow scores"
) -> str:
    png = base64.b64encode(history_png(rows)).decode("ascii")
    summary = [clipped_to_score_range(row) for row in summary]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 13px; margin-bottom: 2em; }}
th, td {{ border: 1px solid #ccc; padding: 3px 8px; text-align: left; }}
th {{ background: #f3f3f3; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>{html.escape(title)}</h1>
<img alt="score history chart" src="data:image/png;base64,{png}">
<h2>Per transcoder, over its latest score on each prompt (95% t interval, clipped to [0, 1])</h2>
{_html_table(summary, SUMMARY_COLUMNS)}
{_boundaries_html(version_boundaries(rows))}
<h2>History, newest first ({len(rows)} scores; * marks new weights)</h2>
{_html_table([_marked(row) for row in rows], HISTORY_TABLE_COLUMNS)}
</body></html>
"""


def _marked(row: dict[str, Any]) -> dict[str, Any]:
    """A history row whose version carries a * on a series' first score with new weights."""
    if row.get("version_changed") and row.get("transcoder_version") is not None:
        return {**row, "transcoder_version": row["transcoder_version"] + " *"}
    return row


def _boundaries_html(boundaries: list[VersionBoundary]) -> str:
    """The chart's dashed lines as a table: where each series went on with new weights."""
    if not boundaries:
        return ""
    rows = [vars(boundary) for boundary in boundaries]
    return (
        "<h2>New weights (the dashed lines): the first run of each new version</h2>\n"
        + _html_table(rows, BOUNDARY_COLUMNS)
    )


def write_history_report(
    store: StoreLike,
    out: Path,
    transcoder: str | None = None,
    since: str | None = None,
) -> Path:
    """Write the history chart to ``out``: a ``.png``, or a self-contained ``.html`` report."""
    suffix = out.suffix.lower()
    if suffix not in (".png", ".html"):
        raise StorageError(f"--out {out} must end in .png (a chart) or .html (a report)")
    rows = history(store, transcoder=transcoder, since=since)
    if not rows:
        raise StorageError("no scores match; nothing to plot")
    if suffix == ".png":
        write_bytes_atomically(out, history_png(rows))
    else:
        summary = transcoder_summary(store)
        if transcoder is not None:
            summary = [
                s for s in summary if transcoder in (s["transcoder_source"], s["transcoder_id"])
            ]
        write_text_atomically(out, history_html(rows, summary))
    return out
