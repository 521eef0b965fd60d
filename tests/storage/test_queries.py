"""history, compare, graph_index and previous_suite_run_scores answer from a populated database."""

from __future__ import annotations

import statistics
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from tracerflow.errors import StorageError
from tracerflow.storage import compare, graph_index, history, previous_suite_run_scores
from tracerflow.storage.queries import latest_transcoder, scores_of_run
from tracerflow.storage.records import TranscoderInfo
from tracerflow.storage.stats import t975

from .builders import (
    FIRST_NIGHT,
    IOI_PROMPTS,
    NEW_CLT,
    OLD_CLT,
    PLT,
    SMOKE_PROMPT,
    nightly_replacement,
    record_run,
    run_info,
    score,
    transcoder,
)


def test_history_lists_newest_first(populated_db: Path) -> None:
    times = [row["created_at"] for row in history(populated_db)]

    assert times == sorted(times, reverse=True)
    assert times[0].tzinfo is UTC


def test_history_gives_the_change_since_the_previous_run(populated_db: Path) -> None:
    rows = history(populated_db, transcoder=OLD_CLT, prompt=IOI_PROMPTS[0])

    assert [row["flow_run_id"] for row in rows] == [f"nightly-{n}" for n in (4, 3, 2, 1, 0)]
    assert rows[0]["replacement_change"] == pytest.approx(
        nightly_replacement(OLD_CLT, 4, 0) - nightly_replacement(OLD_CLT, 3, 0)
    )
    assert rows[-1]["replacement_change"] is None


def test_history_measures_change_across_a_failed_run_from_the_last_success(
    populated_db: Path,
) -> None:
    rows = {r["flow_run_id"]: r for r in history(populated_db, PLT, IOI_PROMPTS[1])}

    assert rows["nightly-2"]["status"] == "failed"
    assert rows["nightly-3"]["previous_replacement_score"] == nightly_replacement(PLT, 1, 1)


def test_history_since_keeps_only_scores_from_that_time_on(populated_db: Path) -> None:
    since = FIRST_NIGHT + timedelta(days=3)

    rows = history(populated_db, transcoder=OLD_CLT, since=since.date().isoformat())

    assert rows and all(row["created_at"] >= since for row in rows)
    assert {row["flow_run_id"] for row in rows} == {"nightly-3", "nightly-4", "smoke-1"}


def test_history_refuses_a_since_that_is_not_a_date(populated_db: Path) -> None:
    with pytest.raises(StorageError, match="not a date"):
        history(populated_db, since="last tuesday")


def test_compare_pairs_the_newest_scores_by_prompt_and_gives_a_t_interval(
    populated_db: Path,
) -> None:
    result = compare(populated_db, OLD_CLT, NEW_CLT)

    differences = [
        nightly_replacement(NEW_CLT, 4, i) - nightly_replacement(OLD_CLT, 4, i)
        for i in range(len(IOI_PROMPTS))
    ]
    half_width = t975(3) * statistics.stdev(differences) / 2
    assert sorted(row["prompt"] for row in result.rows) == sorted(IOI_PROMPTS)
    assert result.replacement.mean == pytest.approx(statistics.fmean(differences))
    assert result.replacement.ci_low == pytest.approx(statistics.fmean(differences) - half_width)
    assert result.replacement.ci_high == pytest.approx(statistics.fmean(differences) + half_width)
    assert result.n_params_differ == 0


def test_compare_restricted_to_prompts_names_those_it_could_not_pair(populated_db: Path) -> None:
    result = compare(populated_db, OLD_CLT, NEW_CLT, prompts=[IOI_PROMPTS[0], SMOKE_PROMPT])

    assert [row["prompt"] for row in result.rows] == [IOI_PROMPTS[0]]
    assert result.missing_prompts == [SMOKE_PROMPT]


def test_compare_of_an_unknown_transcoder_names_the_known_ones(populated_db: Path) -> None:
    with pytest.raises(StorageError, match=f"no scores for transcoder 'nope'.*{NEW_CLT}"):
        compare(populated_db, "nope", OLD_CLT)


def test_graph_index_has_one_entry_per_slug_from_its_newest_record(populated_db: Path) -> None:
    index = graph_index(populated_db)

    slugs = [entry["slug"] for entry in index]
    assert len(slugs) == len(set(slugs)) == 3 * len(IOI_PROMPTS)
    old_clt_first_prompt = next(
        e for e in index if e["slug"] == "ioi-crosslayer-transcoder-topk-16k-0"
    )
    assert old_clt_first_prompt["flow_run_id"] == "nightly-4"
    assert old_clt_first_prompt["replacement_score"] == nightly_replacement(OLD_CLT, 4, 0)


def test_previous_suite_run_is_the_one_started_before_the_given_run(populated_db: Path) -> None:
    previous = previous_suite_run_scores(populated_db, "ioi", before_flow_run_id="nightly-4")

    assert previous is not None and previous.flow_run_id == "nightly-3"
    old_clt = {s.prompt: s.replacement_score for s in previous.scores if s.transcoder == OLD_CLT}
    assert old_clt == {p: nightly_replacement(OLD_CLT, 3, i) for i, p in enumerate(IOI_PROMPTS)}
    assert Counter(s.transcoder for s in previous.scores) == {OLD_CLT: 4, PLT: 4, NEW_CLT: 4}
    assert {(s.model, s.status) for s in previous.scores} == {("gpt2", "ok")}


def test_previous_suite_run_of_a_run_not_yet_recorded_is_the_newest_one(
    populated_db: Path,
) -> None:
    previous = previous_suite_run_scores(populated_db, "ioi", before_flow_run_id="tonight")

    assert previous is not None and previous.flow_run_id == "nightly-4"


def test_a_fanned_out_transcoder_s_previous_run_is_its_own_not_a_sibling_s(
    db_path: Path,
) -> None:
    """A fanned-out suite records one run per transcoder: the PLT's child of tonight must be
    paired with the PLT's child of last night, not with tonight's CLT child that finished first."""
    for night, source, kind in ((0, OLD_CLT, "clt"), (0, PLT, "plt"), (1, OLD_CLT, "clt")):
        started = FIRST_NIGHT + timedelta(days=night, minutes=1 if kind == "plt" else 0)
        record_run(
            db_path,
            run_info(f"night-{night}-{kind}", started),
            [score(transcoder(source, kind), p, 0.7 + night / 10, 0.9) for p in IOI_PROMPTS],
        )

    previous = previous_suite_run_scores(db_path, "ioi", "night-1-plt", transcoders=[PLT])
    assert previous is not None and previous.flow_run_id == "night-0-plt"
    assert {s.transcoder for s in previous.scores} == {PLT}
    # Without the transcoders, the newest run of the suite: a sibling.
    unpaired = previous_suite_run_scores(db_path, "ioi", "night-1-plt")
    assert unpaired is not None and unpaired.flow_run_id == "night-1-clt"


def test_the_first_run_of_a_suite_has_no_previous_run(db_path: Path) -> None:
    record_run(db_path, run_info("first"), [score(transcoder(), IOI_PROMPTS[0], 0.7, 0.9)])

    assert previous_suite_run_scores(db_path, "ioi", before_flow_run_id="first") is None
    assert previous_suite_run_scores(db_path / "absent.duckdb", "ioi", "first") is None


def test_reading_a_missing_database_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match=r"no score database at .* run a flow first"):
        history(tmp_path / "nothing-here.duckdb")


def test_history_times_are_utc_whatever_zone_the_flow_used(db_path: Path) -> None:
    in_paris = datetime(2025, 6, 1, 6, 0, tzinfo=timezone(timedelta(hours=2)))
    record_run(
        db_path, run_info("r"), [score(transcoder(), IOI_PROMPTS[0], 0.7, 0.9, created_at=in_paris)]
    )

    assert history(db_path)[0]["created_at"] == datetime(2025, 6, 1, 4, 0, tzinfo=UTC)


def test_the_latest_transcoder_of_a_source_is_the_one_of_its_newest_score(db_path: Path) -> None:
    monday, tuesday = transcoder(OLD_CLT, content_hash="w1"), transcoder(OLD_CLT, content_hash="w2")
    record_run(db_path, run_info("mon"), [score(monday, IOI_PROMPTS[0], 0.7, 0.9)])
    later = FIRST_NIGHT + timedelta(days=1)
    record_run(db_path, run_info("tue", later),
               [score(tuesday, IOI_PROMPTS[0], 0.7, 0.9, created_at=later)])  # fmt: skip

    assert latest_transcoder(db_path, OLD_CLT) == tuesday
    assert latest_transcoder(db_path, PLT) is None
    assert latest_transcoder(db_path.with_name("absent.duckdb"), OLD_CLT) is None


def test_a_transcoder_recorded_with_unknown_facts_reads_back_with_them_none(db_path: Path) -> None:
    """A source that failed before conversion is recorded with every unknown fact None, and
    reads back so (never ``{}`` or 0 for what was not known)."""
    unknown = TranscoderInfo(OLD_CLT, None, None, None, None, None, None, None, None)
    record_run(db_path, run_info("r"), [score(unknown, IOI_PROMPTS[0], 0.7, 0.9)])
    assert latest_transcoder(db_path, OLD_CLT) == unknown
    assert unknown.activation_params is None


def test_scores_of_run_reads_back_one_runs_rows_as_run_prints_them(populated_db: Path) -> None:
    rows = scores_of_run(populated_db, "nightly-1")

    recorded = [row for row in history(populated_db) if row["flow_run_id"] == "nightly-1"]
    assert len(rows) == len(recorded) > 0
    assert list(rows[0]) == [
        "transcoder_source", "prompt", "replacement_score", "completeness_score",
        "pruned_replacement_score", "pruned_completeness_score", "n_selected_features",
        "attribution_seconds", "status",
    ]  # fmt: skip
    assert [(r["transcoder_source"], r["prompt"]) for r in rows] == sorted(
        (r["transcoder_source"], r["prompt"]) for r in rows
    )
    assert scores_of_run(populated_db, "no-such-run") == []
    assert scores_of_run(populated_db.parent / "none.duckdb", "nightly-1") == []
