"""What a flow run shows in the Prefect UI: a scores table, a summary with the change versus the
previous run of the same suite, the links to its graphs, and a ``tracerflow.score.regressed``
event when a transcoder's replacement score drops by more than the suite's margin.

The change is paired: per transcoder it compares only the prompts both runs scored successfully,
with the same model and the same parameters (``params_hash``), so a prompt added to or dropped
from the suite, a prompt that failed, or a changed parameter set neither raises the alarm nor
hides a real drop. ``summarise`` is pure (rows and the previous run in, markdown and regressions
out); ``publish`` turns its output into Prefect artifacts and events.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from statistics import fmean
from typing import Any
from uuid import UUID

from tracerflow.cells import cell_text
from tracerflow.storage.metrics import MetricsRecord
from tracerflow.storage.queries import PromptScore, SuiteRunScores

REGRESSION_EVENT = "tracerflow.score.regressed"
# The run summary's artifact key: on the run that scored, and on the suite run that started it.
SUMMARY_KEY = "summary"
# The columns of a run's scores table, in the UI and on the command line.
# The database's column names (docs/database.md), as `tracerflow history` and `sql` show them.
SCORE_COLUMNS = [
    "transcoder_source",
    "prompt",
    "replacement_score",
    "completeness_score",
    "pruned_replacement_score",
    "pruned_completeness_score",
    "n_selected_features",
    "attribution_seconds",
    "status",
]
# The columns of a run's transcoder metrics table (all layers; docs/metrics.md), the same in
# the UI, on the command line (under the scores) and in the viewer index.
METRICS_COLUMNS = [
    "transcoder_source",
    "corpus_name",
    "corpus_n_tokens",
    "fvu",
    "l0",
    "dead_share",
    "dense_1pct_share",
    "kl",
    "top1_agreement",
    "ce_loss_recovered",
]


def metrics_row(record: MetricsRecord) -> dict[str, Any]:
    """A run's metrics table row of one evaluated transcoder (its all-layers metrics)."""
    everything = record.metrics["all_layers"]
    fidelity = record.metrics["fidelity"]
    return {
        "transcoder_source": record.transcoder.source,
        "corpus_name": os.path.basename(record.corpus_name),
        "corpus_n_tokens": record.corpus_n_tokens,
        **{name: everything[name] for name in ("fvu", "l0", "dead_share", "dense_1pct_share")},
        **{name: fidelity[name] for name in ("kl", "top1_agreement", "ce_loss_recovered")},
    }


def metrics_markdown(rows: list[dict[str, Any]]) -> str:
    """The summary's section on transcoder quality: one line per evaluated transcoder."""
    if not rows:
        return ""
    lines = [
        "## Transcoder quality (all layers; definitions: docs/metrics.md)",
        "",
        "| " + " | ".join(METRICS_COLUMNS) + " |",
        "|" + "---|" * len(METRICS_COLUMNS),
    ]
    for row in rows:
        lines.append("| " + " | ".join(cell_text(row[c]) for c in METRICS_COLUMNS) + " |")
    return "\n".join(lines)


@dataclass(frozen=True)
class TranscoderChange:
    """One transcoder of this run against the previous run, over the prompts both scored
    successfully with the same model and parameters ("matched")."""

    transcoder: str
    n_ok: int  # prompts scored successfully in this run
    n_failed: int  # prompts that failed in this run
    n_matched: int
    previous_mean: float | None  # mean replacement score over the matched prompts, before
    current_mean: float | None  # the same prompts, now
    n_only_now: int  # scored now, not before at these parameters (new, or failed before)
    n_only_before: int  # scored before, not run now (dropped from the suite)
    params_changed: bool  # the previous run scored it, but under no parameter set used now

    @property
    def change(self) -> float | None:
        if self.previous_mean is None or self.current_mean is None:
            return None
        return self.current_mean - self.previous_mean


@dataclass(frozen=True)
class Regression:
    transcoder: str
    previous_mean: float
    current_mean: float
    margin: float
    n_matched: int  # the prompts both means are over

    @property
    def drop(self) -> float:
        return self.previous_mean - self.current_mean


def viewer_url(slug: str) -> str:
    """The graph's page in ``tracerflow view`` (``TRACERFLOW_VIEWER_URL`` if served elsewhere)."""
    base = os.environ.get("TRACERFLOW_VIEWER_URL", "http://127.0.0.1:8041").rstrip("/")
    return f"{base}/graph.html?slug={slug}"


def graphs_markdown(rows: list[dict[str, Any]]) -> str:
    """The run's graphs, a list of links to their pages in ``tracerflow view``; empty when no
    graph was exported. One artifact for the run: a link artifact per graph cost the Prefect
    API more than a toy suite's whole work."""
    lines = [
        f"[{_link_text(row['transcoder_source'])}: {_link_text(row['prompt'][:60])}]"
        f"({viewer_url(row['slug'])})"
        for row in rows
        if row.get("slug")
    ]
    if not lines:
        return ""
    return "\n".join(["# Graphs of this run", "", *(f"- {line}" for line in lines)])


def _link_text(text: str) -> str:
    """``text`` as a markdown link's text: brackets and backslashes escaped, on one line."""
    return re.sub(r"([\\\[\]])", r"\\\1", " ".join(text.split()))


def prompt_scores(rows: list[dict[str, Any]]) -> list[PromptScore]:
    """This run's rows (``score_flow``'s) in the form the previous run is read in."""
    return [
        PromptScore(
            row["transcoder_source"],
            row["model_name"],
            row["prompt"],
            row["params_hash"],
            row["status"],
            row["replacement_score"],
        )
        for row in rows
    ]


def _ok_scores(scores: list[PromptScore], transcoder: str) -> dict[tuple[str, str, str], float]:
    return {
        (score.model, score.prompt, score.params_hash): score.replacement_score
        for score in scores
        if score.transcoder == transcoder
        and score.status == "ok"
        and score.replacement_score is not None
    }


def paired_changes(
    current: list[PromptScore], previous: list[PromptScore] | None
) -> list[TranscoderChange]:
    """Per transcoder of ``current``, its change since ``previous`` over the matched prompts.

    A failed prompt is not a score of 0: it is left out of the pairing, on both sides, and so is
    a prompt only one run has. Without ``previous`` nothing is matched.
    """
    changes = []
    for transcoder in sorted({score.transcoder for score in current}):
        now = _ok_scores(current, transcoder)
        before = _ok_scores(previous or [], transcoder)
        matched = sorted(now.keys() & before.keys())
        failed_now = {
            (s.model, s.prompt, s.params_hash)
            for s in current
            if s.transcoder == transcoder and s.status != "ok"
        }
        params_now = {s.params_hash for s in current if s.transcoder == transcoder}
        params_before = {s.params_hash for s in previous or [] if s.transcoder == transcoder}
        changes.append(
            TranscoderChange(
                transcoder=transcoder,
                n_ok=len(now),
                n_failed=len(failed_now),
                n_matched=len(matched),
                previous_mean=fmean(before[key] for key in matched) if matched else None,
                current_mean=fmean(now[key] for key in matched) if matched else None,
                n_only_now=len(now.keys() - before.keys()),
                n_only_before=len(before.keys() - now.keys() - failed_now),
                params_changed=bool(params_before) and params_before.isdisjoint(params_now),
            )
        )
    return changes


def regressions_of(changes: list[TranscoderChange], margin: float) -> list[Regression]:
    """The transcoders whose matched prompts lost more than ``margin`` of replacement score."""
    return [
        Regression(change.transcoder, change.previous_mean, change.current_mean, margin,
                   change.n_matched)
        for change in changes
        if change.previous_mean is not None
        and change.current_mean is not None
        and change.previous_mean - change.current_mean > margin
    ]  # fmt: skip


def _note(change: TranscoderChange, previous: SuiteRunScores | None) -> str:
    if previous is None:
        return ""
    if change.params_changed:
        return "parameters changed since the previous run: not compared"
    parts = []
    if change.n_matched == 0:
        parts.append("no prompt scored in both runs: not compared")
    if change.n_failed:
        parts.append(f"{change.n_failed} failed now")
    if change.n_only_now:
        parts.append(f"{change.n_only_now} not scored before")
    if change.n_only_before:
        parts.append(f"{change.n_only_before} no longer run")
    return "; ".join(parts)


def _rounded(value: Any) -> Any:
    """Four decimals are what a person compares; the database keeps full precision."""
    return round(value, 4) if isinstance(value, float) else value


def summarise(
    rows: list[dict[str, Any]],
    suite_name: str | None,
    previous: SuiteRunScores | None,
    margin: float,
) -> tuple[str, list[Regression]]:
    """A markdown summary of the run and the transcoders whose replacement score, over the
    prompts this run and ``previous`` (the same suite's previous run) both scored at the same
    parameters, dropped by more than ``margin``."""
    current = prompt_scores(rows)
    changes = paired_changes(current, previous.scores if previous else None)
    regressions = regressions_of(changes, margin)
    failed = [row for row in rows if row["status"] != "ok"]
    title = f"suite `{suite_name}`" if suite_name else "this run"
    lines = [f"# Scores of {title}", ""]
    lines.append(
        f"{len(rows) - len(failed)} of {len(rows)} items scored"
        + (f", {len(failed)} failed." if failed else ".")
    )
    if previous is None:
        lines += ["", "No previous run of this suite to compare with."]
    else:
        lines += [
            "",
            f"Compared with the previous run `{previous.flow_run_id}` over the prompts both runs "
            "scored successfully with the same model and parameters (failed, new and dropped "
            "prompts are left out of both means).",
        ]
    lines += [
        "",
        "| transcoder | mean replacement (all ok prompts) | prompts compared "
        "| previous run | this run | change | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for change in changes:
        all_ok = [s.replacement_score for s in current
                  if s.transcoder == change.transcoder and s.status == "ok"
                  and s.replacement_score is not None]  # fmt: skip
        lines.append(
            f"| {change.transcoder} | {cell_text(fmean(all_ok) if all_ok else None)} "
            f"| {change.n_matched} | {cell_text(change.previous_mean)} "
            f"| {cell_text(change.current_mean)} | {cell_text(change.change, signed=True)} "
            f"| {_note(change, previous)} |"
        )
    for regression in regressions:
        lines += [
            "",
            f"**Regression:** `{regression.transcoder}` mean replacement score over the "
            f"{regression.n_matched} prompts both runs scored dropped by {regression.drop:.4f} "
            f"(from {regression.previous_mean:.4f} to {regression.current_mean:.4f}; "
            f"margin {margin:.4f}).",
        ]
    for row in failed:
        lines += [
            "",
            f"Failed: `{row['transcoder_source']}` on {row['prompt'][:60]!r}: {row['error']}",
        ]
    return "\n".join(lines), regressions


def publish(
    rows: list[dict[str, Any]],
    suite_name: str | None,
    previous: SuiteRunScores | None,
    margin: float,
    metrics: list[MetricsRecord] | None = None,
) -> list[Regression]:
    """Create the run's artifacts and emit one event per regression."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact
    from prefect.events import emit_event

    table = [{key: _rounded(row[key]) for key in SCORE_COLUMNS} for row in rows]
    create_table_artifact(table=table, key="scores", description="Scores of this run")
    markdown, regressions = summarise(rows, suite_name, previous, margin)
    quality = [metrics_row(record) for record in metrics or []]
    if quality:
        create_table_artifact(
            table=[{key: _rounded(value) for key, value in row.items()} for row in quality],
            key="transcoder-metrics",
            description="Transcoder quality metrics of this run (all layers)",
        )
        markdown += "\n\n" + metrics_markdown(quality)
    create_markdown_artifact(markdown=markdown, key=SUMMARY_KEY, description="Run summary")
    graphs = graphs_markdown(rows)
    if graphs:
        create_markdown_artifact(
            markdown=graphs, key="graphs", description="Open each graph in `tracerflow view`"
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
                "n_prompts_compared": regression.n_matched,
                "previous_flow_run_id": previous.flow_run_id if previous else None,
            },
        )
    return regressions


def carry_summaries(flow_run_ids: list[UUID]) -> str | None:
    """Create on the current flow run (a suite's) the summary artifact of each run it started
    (``flow_run_ids``, in that order, one after another): the run a person clicks in the UI is
    the suite's, and its scoring runs are one level down. Returns the markdown, or None when no
    run left a summary (it failed before it published)."""
    from prefect.artifacts import create_markdown_artifact
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                flow_run_id=ArtifactFilterFlowRunId(any_=flow_run_ids),
                key=ArtifactFilterKey(any_=[SUMMARY_KEY]),
            )
        )
    newest = {
        a.flow_run_id: str(a.data)
        for a in sorted(artifacts, key=lambda a: (a.created is not None, a.created))
    }
    parts = [newest[run_id] for run_id in flow_run_ids if run_id in newest]
    if not parts:
        return None
    markdown = "\n\n".join(parts)
    create_markdown_artifact(
        markdown=markdown, key=SUMMARY_KEY, description="Run summary (of the runs it started)"
    )
    return markdown


def carrying_summary(state: Any) -> Any:
    """The result of a scoring run started from the current one (its final ``state``), after
    its summary is carried onto the current run (``carry_summaries``); a failed run raises its
    error, as calling it without ``return_state`` would have."""
    carry_summaries([state.state_details.flow_run_id])
    return state.result()
