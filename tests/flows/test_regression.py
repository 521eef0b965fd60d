"""The regression alarm pairs prompts: only what both runs scored, at equal parameters, counts.

Each scenario gives the previous run's and this run's replacement scores per prompt (None: the
prompt failed) and the drop worked out by hand over the prompts both runs scored successfully.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.storage.builders import GPT2, NOTEBOOK_PARAMS, run_info, score, transcoder
from tracerflow.flows.report import graphs_markdown, paired_changes, summarise
from tracerflow.storage import record_run
from tracerflow.storage.queries import PromptScore, SuiteRunScores, previous_suite_run_scores
from tracerflow.storage.records import params_hash

CLT = "toy-clt"
MARGIN = 0.02
PARAMS = params_hash(NOTEBOOK_PARAMS)
OTHER_PARAMS = params_hash({**NOTEBOOK_PARAMS, "max_feature_nodes": 1024})


def scores(values: dict[str, float | None], params: str = PARAMS) -> list[PromptScore]:
    return [
        PromptScore(CLT, "gpt2", prompt, params, "ok" if value is not None else "failed", value)
        for prompt, value in values.items()
    ]


def rows(values: dict[str, float | None], params: str = PARAMS) -> list[dict[str, Any]]:
    """This run's rows as ``score_flow`` hands them to ``publish``."""
    return [
        {"transcoder_source": s.transcoder, "model_name": s.model, "prompt": s.prompt,
         "params_hash": s.params_hash, "status": s.status, "replacement_score": s.replacement_score,
         "error": None if s.status == "ok" else "AttributionError: too long"}
        for s in scores(values, params)
    ]  # fmt: skip


# (name, previous run, this run, prompts compared, previous mean, this mean, alarm)
SCENARIOS = [
    # Every prompt lost 0.04: (0.70+0.80+0.90)/3 = 0.80 -> (0.66+0.76+0.86)/3 = 0.76.
    ("the same prompts drop", {"a": 0.70, "b": 0.80, "c": 0.90},
     {"a": 0.66, "b": 0.76, "c": 0.86}, 3, 0.80, 0.76, True),
    # A hard prompt joins the suite; the others are unchanged (unpaired: 0.80 -> 0.625, alarm).
    ("a new low-scoring prompt is added", {"a": 0.70, "b": 0.80, "c": 0.90},
     {"a": 0.70, "b": 0.80, "c": 0.90, "new": 0.10}, 3, 0.80, 0.80, False),
    # An easy prompt leaves the suite (unpaired: 0.8475 -> 0.80, alarm).
    ("a high-scoring prompt is dropped", {"a": 0.70, "b": 0.80, "c": 0.90, "easy": 0.99},
     {"a": 0.70, "b": 0.80, "c": 0.90}, 3, 0.80, 0.80, False),
    # c fails tonight: not a 0 (0.80 -> 0.50), not a shorter mean (0.80 -> 0.75): left out.
    ("a prompt fails, the others hold", {"a": 0.70, "b": 0.80, "c": 0.90},
     {"a": 0.70, "b": 0.80, "c": None}, 2, 0.75, 0.75, False),
    # c, the low one, fails while a and b lose 0.04: (0.90+0.80)/2 = 0.85 -> (0.86+0.76)/2 = 0.81.
    # Unpaired, 0.6667 -> 0.81 looks like a gain and hides the drop.
    ("a prompt fails and the others drop", {"a": 0.90, "b": 0.80, "c": 0.30},
     {"a": 0.86, "b": 0.76, "c": None}, 2, 0.85, 0.81, True),
    # A prompt that failed last time scores tonight: it is new to the comparison, not a gain.
    ("a prompt that failed before scores now", {"a": 0.70, "b": 0.80, "c": None},
     {"a": 0.70, "b": 0.80, "c": 0.20}, 2, 0.75, 0.75, False),
    # An easy prompt joins while the old ones lose 0.04: 0.75 -> 0.71 (unpaired: 0.75 -> 0.79).
    ("a new easy prompt hides nothing", {"a": 0.70, "b": 0.80},
     {"a": 0.66, "b": 0.76, "easy": 0.95}, 2, 0.75, 0.71, True),
    # Within the margin: 0.80 -> 0.785.
    ("a drop within the margin", {"a": 0.70, "b": 0.80, "c": 0.90},
     {"a": 0.685, "b": 0.785, "c": 0.885}, 3, 0.80, 0.785, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("before", "now", "n_matched", "previous_mean", "current_mean", "alarm"),
    [scenario[1:] for scenario in SCENARIOS],
    ids=[scenario[0] for scenario in SCENARIOS],
)
def test_the_alarm_compares_only_the_prompts_both_runs_scored(
    before, now, n_matched, previous_mean, current_mean, alarm
) -> None:
    previous = SuiteRunScores("yesterday", None, scores(before))

    markdown, regressions = summarise(rows(now), "ioi", previous, MARGIN)

    (change,) = paired_changes(scores(now), previous.scores)
    assert change.n_matched == n_matched
    assert change.previous_mean == pytest.approx(previous_mean)
    assert change.current_mean == pytest.approx(current_mean)
    assert bool(regressions) == alarm
    if alarm:
        (regression,) = regressions
        assert regression.drop == pytest.approx(previous_mean - current_mean)
        assert regression.n_matched == n_matched
        assert f"over the {n_matched} prompts both runs scored dropped by" in markdown
    assert f"| {CLT} |" in markdown and f"| {n_matched} |" in markdown


def test_changed_parameters_are_not_compared_and_the_summary_says_so() -> None:
    previous = SuiteRunScores("yesterday", None, scores({"a": 0.90, "b": 0.90}))

    markdown, regressions = summarise(
        rows({"a": 0.10, "b": 0.10}, params=OTHER_PARAMS), "ioi", previous, MARGIN
    )

    (change,) = paired_changes(scores({"a": 0.1}, params=OTHER_PARAMS), previous.scores)
    assert change.params_changed and change.n_matched == 0
    assert regressions == []
    assert "parameters changed since the previous run: not compared" in markdown


def test_another_model_is_not_compared() -> None:
    previous = SuiteRunScores("yesterday", None, scores({"a": 0.90}))
    tonight = [PromptScore(CLT, "gpt2-medium", "a", PARAMS, "ok", 0.10)]

    (change,) = paired_changes(tonight, previous.scores)

    assert change.n_matched == 0 and change.current_mean is None


def test_transcoders_are_compared_each_with_itself() -> None:
    before = [*scores({"a": 0.7}), PromptScore("toy-plt", "gpt2", "a", PARAMS, "ok", 0.95)]
    now = [*scores({"a": 0.7}), PromptScore("toy-plt", "gpt2", "a", PARAMS, "ok", 0.5)]

    changes = {change.transcoder: change for change in paired_changes(now, before)}

    assert changes[CLT].change == 0.0
    assert changes["toy-plt"].change == pytest.approx(-0.45)


def test_the_first_run_of_a_suite_compares_nothing() -> None:
    markdown, regressions = summarise(rows({"a": 0.5}), "ioi", None, MARGIN)

    assert regressions == []
    assert "No previous run of this suite to compare with." in markdown


def test_the_previous_run_is_read_back_from_the_database_with_its_failures(
    tmp_path: Path,
) -> None:
    """The scenario "a prompt fails and the others drop", yesterday's run recorded in DuckDB."""
    db_path = tmp_path / "scores.duckdb"
    yesterday = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
    clt = transcoder(CLT)
    record_run(db_path, run_info("yesterday", yesterday), [
        score(clt, "a", 0.90, 0.9, created_at=yesterday),
        score(clt, "b", 0.80, 0.9, created_at=yesterday),
        score(clt, "c", 0.30, 0.9, created_at=yesterday),
        score(clt, "d", None, None, created_at=yesterday, status="failed"),
    ])  # fmt: skip

    previous = previous_suite_run_scores(db_path, "ioi", before_flow_run_id="tonight")
    assert previous is not None and previous.flow_run_id == "yesterday"
    assert {(s.prompt, s.status) for s in previous.scores} == {
        ("a", "ok"), ("b", "ok"), ("c", "ok"), ("d", "failed"),
    }  # fmt: skip
    assert {s.model for s in previous.scores} == {GPT2.name}
    _, regressions = summarise(
        rows({"a": 0.86, "b": 0.76, "c": None, "d": 0.99}), "ioi", previous, MARGIN
    )

    (regression,) = regressions
    assert regression.n_matched == 2
    assert regression.drop == pytest.approx(0.85 - 0.81)


def test_the_summary_says_what_was_left_out_of_the_comparison() -> None:
    previous = SuiteRunScores("yesterday", None, scores({"a": 0.7, "b": 0.8, "gone": 0.9}))

    markdown, _ = summarise(rows({"a": 0.7, "b": None, "new": 0.5}), "ioi", previous, MARGIN)

    assert (
        "| 1 | 0.7000 | 0.7000 | +0.0000 | 1 failed now; 1 not scored before; 1 no longer run |"
        in (markdown)
    )
    assert "Compared with the previous run `yesterday`" in markdown


def test_the_summary_lists_each_evaluated_transcoder_s_metrics() -> None:
    from tests.storage.test_transcoder_metrics import metrics_record
    from tracerflow.flows.report import METRICS_COLUMNS, metrics_markdown, metrics_row

    row = metrics_row(metrics_record("toy-clt", fvu=0.1, kl=0.05))
    markdown = metrics_markdown([row])

    assert list(row) == METRICS_COLUMNS
    assert row["corpus_name"] == "held-out.txt" and row["fvu"] == pytest.approx(0.15)
    assert "| toy-clt | held-out.txt | 40 | 0.1500 | 32.0000 |" in markdown
    assert metrics_markdown([]) == ""


def test_the_graphs_artifact_links_every_exported_graph_once() -> None:
    exported = {"transcoder_source": "toy-clt", "prompt": "Mary [and] John", "slug": "toy-clt-1"}
    failed = {"transcoder_source": "toy-clt", "prompt": "too long", "slug": None}
    lines = graphs_markdown([exported, failed]).splitlines()
    links = [line for line in lines if line.startswith("- ")]
    assert links == [
        r"- [toy-clt: Mary \[and\] John](http://127.0.0.1:8041/graph.html?slug=toy-clt-1)"
    ]
    assert graphs_markdown([failed]) == ""
