"""The evaluate step of the scoring flow on the toy preset: once per transcoder after its prompts,
on the right tokens, recorded with the run, and a failure that costs no score."""

from __future__ import annotations

import json
from pathlib import Path

from tests.flows.test_score_flow import PROMPTS, db_rows, run_flow, task_runs, task_states
from tracerflow import toy


def task_times(flow_run_id) -> dict[str, list[tuple]]:
    """Task name -> (start, end) of each of its runs in one flow run."""
    return {
        name: [(run.start_time, run.end_time) for run in runs]
        for name, runs in task_runs(flow_run_id).items()
    }


def test_each_transcoder_is_evaluated_once_after_its_prompts_and_recorded_with_the_run(home):
    state, run_id = run_flow(["toy-clt", "toy-plt"], PROMPTS, eval_tokens=300)
    assert state.is_completed(), state.message

    assert task_states(run_id)["evaluate"] == ["Completed", "Completed"]
    times = task_times(run_id)
    last_attribution = max(end for _, end in times["attribute"] + times["export"])
    assert all(start >= last_attribution for start, _ in times["evaluate"])
    rows = db_rows(
        "SELECT transcoder_source, corpus_name, corpus_n_tokens, count(*), count(kl) "
        "FROM transcoder_metrics_wide WHERE flow_run_id = ? GROUP BY ALL ORDER BY 1",
        str(run_id),
    )
    corpus = str(toy.eval_corpus_path().resolve())  # the preset's held-out corpus, capped
    assert rows == [("toy-clt", corpus, 300, 4, 1), ("toy-plt", corpus, 300, 4, 1)]


def test_a_corpus_file_given_to_the_run_wins_over_the_preset_s(home, tmp_path: Path):
    corpus = tmp_path / "mine.jsonl"
    corpus.write_text(
        "\n".join(json.dumps({"text": t}) for t in ("Alice and Bob went to the park", "A cat"))
    )
    state, run_id = run_flow(["toy-clt"], PROMPTS[:1], eval_corpus=str(corpus))
    assert state.is_completed(), state.message

    ((name, n_tokens),) = db_rows(
        "SELECT DISTINCT corpus_name, corpus_n_tokens FROM transcoder_metrics WHERE "
        "flow_run_id = ?",
        str(run_id),
    )
    assert name == str(corpus.resolve()) and 0 < n_tokens < 20


def test_a_failed_evaluation_keeps_the_scores_and_fails_the_run_naming_the_file(
    home, tmp_path: Path
):
    corpus = tmp_path / "broken.jsonl"
    corpus.write_text('{"text": "Alice and Bob went to the park"}\n{"txt": "no text field"}\n')
    state, run_id = run_flow(["toy-clt"], PROMPTS[:1], eval_corpus=str(corpus))

    assert state.is_failed()
    assert "evaluation" in state.message and f"{corpus}:2" in state.message
    assert db_rows("SELECT status FROM scores WHERE flow_run_id = ?", str(run_id)) == [("ok",)]
    assert db_rows("SELECT count(*) FROM transcoder_metrics") == [(0,)]
