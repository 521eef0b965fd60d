"""The views say what the raw tables imply, checked with independent SQL and Python arithmetic."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import duckdb
import pytest

from tracerflow.storage.stats import t975


def raw_scores(db_path: Path) -> list[dict[str, Any]]:
    """Scores joined by hand from the base tables, no view involved."""
    with duckdb.connect(str(db_path), read_only=True) as con:
        cursor = con.execute(
            """
            SELECT s.*, t.source AS transcoder_source, p.text AS prompt
            FROM scores s, transcoders t, prompts p
            WHERE s.transcoder_id = t.transcoder_id AND s.prompt_id = p.prompt_id
            """
        )
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def view(db_path: Path, name: str) -> list[dict[str, Any]]:
    with duckdb.connect(str(db_path), read_only=True) as con:
        cursor = con.execute(f"SELECT * FROM {name}")
        columns = [d[0] for d in cursor.description]
        return [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]


def series_key(row: dict[str, Any]) -> tuple[str, ...]:
    return (row["transcoder_id"], row["model_id"], row["prompt_id"], row["params_hash"])


def student_t_975(df: int) -> float:
    """The 0.975 quantile of Student's t by bisection on a numerically integrated density."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)

    def density(t: float) -> float:
        return math.exp(log_norm - (df + 1) / 2 * math.log1p(t * t / df))

    def mass_from_zero(t: float, steps: int = 4000) -> float:  # Simpson's rule on [0, t]
        h = t / steps
        inner = sum((4 if i % 2 else 2) * density(i * h) for i in range(1, steps))
        return h / 3 * (density(0) + inner + density(t))

    low, high = 0.0, 20.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if mass_from_zero(middle) < 0.475 else (low, middle)
    return (low + high) / 2


@pytest.mark.parametrize("df", [1, 2, 4, 9, 30, 31, 60, 200])
def test_the_t_quantile_matches_an_independent_integration(df: int) -> None:
    assert t975(df) == pytest.approx(student_t_975(df), rel=1e-6)


def test_the_sql_t_quantile_matches_the_python_one(populated_db: Path) -> None:
    with duckdb.connect(str(populated_db), read_only=True) as con:
        in_sql = con.execute("SELECT df, t975(df) FROM range(1, 200) r(df)").fetchall()

    assert in_sql == [(df, pytest.approx(t975(df), rel=1e-12)) for df in range(1, 200)]


def test_latest_scores_hold_the_newest_successful_score_of_each_series(
    populated_db: Path,
) -> None:
    newest: dict[tuple[str, ...], dict[str, Any]] = {}
    for row in raw_scores(populated_db):
        if row["status"] == "ok" and (
            series_key(row) not in newest
            or row["created_at"] > newest[series_key(row)]["created_at"]
        ):
            newest[series_key(row)] = row

    latest = view(populated_db, "latest_scores")

    assert sorted(r["score_id"] for r in latest) == sorted(r["score_id"] for r in newest.values())


def test_score_history_gives_each_score_the_previous_successful_score_of_its_series(
    populated_db: Path,
) -> None:
    by_series: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for row in sorted(raw_scores(populated_db), key=lambda r: r["created_at"]):
        by_series[series_key(row)].append(row)
    expected = {}
    for rows in by_series.values():
        previous = None
        for row in rows:
            expected[(series_key(row), row["flow_run_id"])] = previous
            if row["replacement_score"] is not None:
                previous = row["replacement_score"]

    history = view(populated_db, "score_history")

    assert len(history) == len(expected)
    for row in history:
        previous = expected[(series_key(row), row["flow_run_id"])]
        assert row["previous_replacement_score"] == previous
        if previous is None or row["replacement_score"] is None:
            assert row["replacement_change"] is None
        else:
            assert row["replacement_change"] == pytest.approx(row["replacement_score"] - previous)


def test_transcoder_summary_is_the_mean_range_and_t_interval_over_latest_scores(
    populated_db: Path,
) -> None:
    per_transcoder: dict[str, list[float]] = defaultdict(list)
    for row in view(populated_db, "latest_scores"):
        per_transcoder[row["transcoder_source"]].append(row["replacement_score"])

    summary = {row["transcoder_source"]: row for row in view(populated_db, "transcoder_summary")}

    assert summary.keys() == per_transcoder.keys()
    for source, values in per_transcoder.items():
        row = summary[source]
        n, mean = len(values), statistics.fmean(values)
        assert row["n_prompts"] == row["replacement_n"] == n
        assert row["replacement_mean"] == pytest.approx(mean)
        assert (row["replacement_min"], row["replacement_max"]) == (min(values), max(values))
        if n < 2:
            assert row["replacement_ci_low"] is None
            continue
        half_width = student_t_975(n - 1) * statistics.stdev(values) / math.sqrt(n)
        assert row["replacement_ci_low"] == pytest.approx(mean - half_width, rel=1e-6)
        assert row["replacement_ci_high"] == pytest.approx(mean + half_width, rel=1e-6)
