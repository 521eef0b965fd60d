"""A transcoder's history follows its source across weight changes (issue 26, part 4): one series
per source, the weights' version a column, its changes marked in `history` and `plot history`."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from matplotlib.dates import date2num
from typer.testing import CliRunner

from tracerflow.cli import app
from tracerflow.storage.database import record_run
from tracerflow.storage.queries import history
from tracerflow.storage.report import history_figure, history_html, version_boundaries

from .builders import FIRST_NIGHT, IOI_PROMPTS, OLD_CLT, run_info, score, transcoder

WEIGHTS = ("a1b2c3d4" + "0" * 56, "e5f6a7b8" + "1" * 56)  # before and after the retraining
# Night by night: the weights each run scored with, and the replacement score of prompt 0.
NIGHTS = ((WEIGHTS[0], 0.70), (WEIGHTS[0], 0.71), (WEIGHTS[1], 0.75))


@pytest.fixture(scope="module")
def retrained_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three nightly runs of one source on two prompts; its weights change before the third."""
    path = tmp_path_factory.mktemp("versions") / "scores.duckdb"
    for night, (weights, replacement) in enumerate(NIGHTS):
        started_at = FIRST_NIGHT + timedelta(days=night)
        scored = transcoder(OLD_CLT, content_hash=weights)
        records = [
            score(scored, prompt, replacement - 0.1 * index, 0.9, created_at=started_at)
            for index, prompt in enumerate(IOI_PROMPTS[:2])
        ]
        record_run(path, run_info(f"night-{night}", started_at=started_at), records)
    return path


def test_history_is_one_series_across_weights_and_marks_the_first_score_of_new_ones(
    retrained_db: Path,
) -> None:
    rows = history(retrained_db, prompt=IOI_PROMPTS[0])

    assert [(r["flow_run_id"], r["transcoder_version"], r["version_changed"]) for r in rows] == [
        ("night-2", "e5f6a7b8", True),
        ("night-1", "a1b2c3d4", False),
        ("night-0", "a1b2c3d4", False),
    ]
    # The change is measured across the new weights, against the previous night's score.
    assert rows[0]["previous_replacement_score"] == pytest.approx(0.71, abs=1e-12)
    assert rows[0]["replacement_change"] == pytest.approx(0.75 - 0.71, abs=1e-12)
    assert rows[-1]["previous_replacement_score"] is None


def test_plot_history_finds_one_boundary_and_draws_it_on_both_panels(retrained_db: Path) -> None:
    rows = history(retrained_db)

    (boundary,) = version_boundaries(rows)
    assert (boundary.label, boundary.previous, boundary.version) == (
        f"{OLD_CLT} (ioi)",
        "a1b2c3d4",
        "e5f6a7b8",
    )
    assert boundary.at == FIRST_NIGHT.replace(tzinfo=boundary.at.tzinfo) + timedelta(days=2)
    figure = history_figure(rows)
    for ax in figure.axes:
        vertical = [line for line in ax.get_lines() if len(set(line.get_xdata(orig=False))) == 1]
        assert [line.get_xdata(orig=False)[0] for line in vertical] == [
            pytest.approx(date2num(boundary.at))
        ]
    annotations = [text.get_text() for text in figure.axes[0].texts]
    assert annotations == ["new weights e5f6a7b8"]
    report = history_html(rows, [])
    assert "e5f6a7b8 *" in report and "New weights" in report


def test_no_boundary_while_the_weights_stay(retrained_db: Path) -> None:
    rows = [row for row in history(retrained_db) if row["flow_run_id"] != "night-2"]

    assert version_boundaries(rows) == []


def test_history_table_marks_the_new_version_and_says_what_the_mark_means(
    retrained_db: Path,
) -> None:
    result = CliRunner().invoke(
        app, ["history", "--db", str(retrained_db), "--prompt", IOI_PROMPTS[0]]
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["created_at", "transcoder_source", "version"]
    assert [line.split()[3:5] for line in lines[2:5]] == [
        ["e5f6a7b8", "*"],
        ["a1b2c3d4", IOI_PROMPTS[0].split()[0]],
        ["a1b2c3d4", IOI_PROMPTS[0].split()[0]],
    ]
    assert lines[-1].startswith("* new weights")
