"""What a flow run shows in the Prefect UI: a scores table, a summary with the change versus the
previous run of the same suite, a link per graph, and a ``tracerflow.score.regressed`` event when
a transcoder's mean replacement score drops by more than the suite's margin.

``summarise`` is pure (rows and the previous run in, markdown and regressions out); ``publish``
turns its output into Prefect artifacts and events.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from statistics import mean
from typing import Any

from tracerflow.storage.queries import SuiteRunScores

REGRESSION_EVENT = "tracerflow.score.regressed"
# The columns of a run's scores table, in the UI and on the command line.
SCORE_COLUMNS = [
    "transcoder",
    "prompt",
    "replacement",
    "completeness",
    "pruned_replacement",
    "pruned_completeness",
    "features",
    "seconds",
    "status",
]


@dataclass(frozen=True)
class Regression:
    transcoder: str
    previous_mean: float
    current_mean: float
    margin: float

    @property
    def drop(self) -> float:
        return self.previous_mean - self.current_mean


def viewer_url(slug: str) -> str:
    """The graph's page in ``tracerflow view`` (``TRACERFLOW_VIEWER_URL`` if served elsewhere)."""
    base = os.environ.get("TRACERFLOW_VIEWER_URL", "http://127.0.0.1:8041").rstrip("/")
    return f"{base}/graph.html?slug={slug}"


def mean_replacement_by_transcoder(rows: list[dict[str, Any]]) -> dict[str, float]:
    by_transcoder: dict[str, list[float]] = {}
    for row in rows:
        if row["status"] == "ok" and row["replacement"] is not None:
            by_transcoder.setdefault(row["transcoder"], []).append(row["replacement"])
    return {source: mean(values) for source, values in by_transcoder.items()}


def _rounded(value: Any) -> Any:
    """Four decimals are what a person compares; the database keeps full precision."""
    return round(value, 4) if isinstance(value, float) else value


def summarise(
    rows: list[dict[str, Any]],
    suite_name: str | None,
    previous: SuiteRunScores | None,
    margin: float,
) -> tuple[str, list[Regression]]:
    """A markdown summary of the run and the transcoders whose mean replacement score dropped
    by more than ``margin`` since ``previous`` (the same suite's previous run)."""
    current = mean_replacement_by_transcoder(rows)
    failed = [row for row in rows if row["status"] != "ok"]
    title = f"suite `{suite_name}`" if suite_name else "this run"
    lines = [f"# Scores of {title}", ""]
    lines.append(
        f"{len(rows) - len(failed)} of {len(rows)} items scored"
        + (f", {len(failed)} failed." if failed else ".")
    )
    lines += ["", "| transcoder | mean replacement | previous run | change |", "|---|---|---|---|"]
    regressions = []
    for source, value in sorted(current.items()):
        before = previous.mean_replacement_score.get(source) if previous else None
        change = "" if before is None else f"{value - before:+.4f}"
        lines.append(
            f"| {source} | {value:.4f} | {'' if before is None else f'{before:.4f}'} | {change} |"
        )
        if before is not None and before - value > margin:
            regressions.append(Regression(source, before, value, margin))
    if previous is None:
        lines += ["", "No previous run of this suite to compare with."]
    for regression in regressions:
        lines += [
            "",
            f"**Regression:** `{regression.transcoder}` mean replacement score dropped by "
            f"{regression.drop:.4f} (from {regression.previous_mean:.4f} to "
            f"{regression.current_mean:.4f}; margin {margin:.4f}).",
        ]
    for row in failed:
        lines += ["", f"Failed: `{row['transcoder']}` on {row['prompt'][:60]!r}: {row['error']}"]
    return "\n".join(lines), regressions


def publish(
    rows: list[dict[str, Any]],
    suite_name: str | None,
    previous: SuiteRunScores | None,
    margin: float,
) -> list[Regression]:
    """Create the run's artifacts and emit one event per regression."""
    from prefect.artifacts import (
        create_link_artifact,
        create_markdown_artifact,
        create_table_artifact,
    )
    from prefect.events import emit_event

    table = [{key: _rounded(row[key]) for key in SCORE_COLUMNS} for row in rows]
    create_table_artifact(table=table, key="scores", description="Scores of this run")
    markdown, regressions = summarise(rows, suite_name, previous, margin)
    create_markdown_artifact(markdown=markdown, key="summary", description="Run summary")
    for row in rows:
        if row.get("slug"):
            create_link_artifact(
                link=viewer_url(row["slug"]),
                link_text=f"{row['transcoder']}: {row['prompt'][:60]}",
                description="Open the attribution graph in `tracerflow view`",
            )
    for regression in regressions:
        emit_event(
            event=REGRESSION_EVENT,
            resource={
                "prefect.resource.id": f"tracerflow.transcoder.{regression.transcoder}",
                "prefect.resource.name": regression.transcoder,
            },
            payload={
                "suite": suite_name,
                "transcoder": regression.transcoder,
                "previous_mean_replacement_score": regression.previous_mean,
                "mean_replacement_score": regression.current_mean,
                "drop": regression.drop,
                "margin": regression.margin,
            },
        )
    return regressions
