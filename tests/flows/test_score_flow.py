"""The scoring flow end to end on the toy preset, against a real Prefect API and DuckDB file."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import duckdb
import pytest
import torch
from circuit_tracer import attribute
from circuit_tracer.graph import compute_graph_scores
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from safetensors.torch import load_file

from tests.presets import preset_named
from tracerflow.flows.score import score_flow
from tracerflow.models import toy_model_config
from tracerflow.parameters import RunRequest
from tracerflow.presets import builtin_prompts
from tracerflow.settings import Settings, get_settings
from tracerflow.tasks.download import resolve_source
from tracerflow.tasks.score import score_graph

PROMPTS = ["Mary and John went to the store, John gave a drink to", "The cat sat on the"]


def task_runs(flow_run_id) -> dict[str, list]:
    """Task name -> its task runs in one flow run, read back from the Prefect API."""
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    by_name: dict[str, list] = {}
    for run in runs:
        by_name.setdefault(run.name.rsplit("-", 1)[0], []).append(run)
    return by_name


def task_states(flow_run_id) -> dict[str, list[str]]:
    """Task name -> state names of one flow run."""
    return {name: [run.state.name for run in runs] for name, runs in task_runs(flow_run_id).items()}


def run_flow(transcoders, prompts, **options):
    request = RunRequest(transcoders=transcoders, prompts=prompts, **options)
    state = score_flow(request, return_state=True)
    return state, state.state_details.flow_run_id


def artifact_files(home):
    return {
        path: path.stat().st_mtime_ns for path in (home / "artifacts").rglob("*") if path.is_file()
    }


def db_rows(sql: str, *params):
    with duckdb.connect(str(get_settings().database_path), read_only=True) as con:
        return con.execute(sql, list(params)).fetchall()


def test_demo_runs_offline_and_records_every_score(demo_run):
    """The session's `tracerflow demo` (offline, in its own home): one run whose every row is ok,
    the toy CLT and PLT on every built-in prompt, each with scores and a graph file."""
    prompts = builtin_prompts()
    settings = Settings(home=demo_run.home)
    with duckdb.connect(str(settings.database_path), read_only=True) as con:
        rows = con.execute(
            "SELECT flow_run_id, status, transcoder_source, prompt, replacement_score, "
            "completeness_score, pruned_replacement_score, pruned_completeness_score, slug "
            "FROM scores_wide"
        ).fetchall()
        models = con.execute("SELECT name, n_layers, d_model, d_vocab, n_ctx FROM models")
        models = models.fetchall()
    assert len({run_id for run_id, *_ in rows}) == 1
    assert sorted((source, prompt) for _, _, source, prompt, *_ in rows) == sorted(
        (source, prompt) for source in ("toy-clt", "toy-plt") for prompt in prompts
    )
    for _, status, _, _, *scores, slug in rows:
        assert status == "ok"
        assert all(0.0 <= score <= 1.0 for score in scores)
        assert (settings.graph_files_dir / f"{slug}.json").is_file()
    cfg = toy_model_config()  # the model's shape is recorded as attribution saw it
    assert models == [("toy-gpt2", cfg.n_layers, cfg.d_model, cfg.d_vocab, cfg.n_ctx)]


def test_stored_scores_equal_the_work_done_by_hand(home):
    """The flow records exactly what its attribution computes when called directly (bit for bit,
    CPU fp32), and what bare circuit-tracer computes to 1e-6 (tracerflow's attribution is a
    faster, reordered computation of the same graph; tests/attribution checks the graphs)."""
    from tracerflow import attribution, machine
    from tracerflow.models import load_replacement_model
    from tracerflow.transcoders import convert, load_converted

    prompt = PROMPTS[0]
    threads = 2  # the same count by hand: the number must not depend on luck
    state, run_id = run_flow(["toy-clt"], [prompt], threads=threads)
    assert state.is_completed(), state.message
    preset = preset_named("toy-clt")
    ((params_json, *stored),) = db_rows(
        "SELECT params_json, replacement_score, completeness_score, pruned_replacement_score, "
        "pruned_completeness_score FROM scores_wide WHERE flow_run_id = ?",
        str(run_id),
    )
    recorded_params = json.loads(params_json)
    assert recorded_params["batch_size"] == preset.batch_size

    transcoders = load_converted(
        convert(resolve_source("toy-clt").path, home / "direct"), device="cpu"
    )
    model = load_replacement_model(preset.model, transcoders, device="cpu")
    arguments = {
        "max_n_logits": preset.max_n_logits,
        "desired_logit_prob": preset.desired_logit_prob,
        "max_feature_nodes": preset.max_feature_nodes,
        "batch_size": preset.batch_size,
    }
    ours = attribution.attribute(prompt, model, threads=threads, **arguments).graph
    with machine.torch_threads(threads):  # scores, too, depend on the thread count
        by_hand = score_graph(ours, preset.node_threshold, preset.edge_threshold)
    assert stored == [
        by_hand.replacement_score,
        by_hand.completeness_score,
        by_hand.pruned_replacement_score,
        by_hand.pruned_completeness_score,
    ]

    stock = compute_graph_scores(attribute(prompt, model, **arguments))
    assert abs(stored[0] - stock[0]) <= 1e-6 and abs(stored[1] - stock[1]) <= 1e-6


def test_two_runs_that_share_no_cache_give_bit_identical_graphs_and_scores(
    tmp_path, monkeypatch, prefect_api
):
    """The same inputs and settings on this machine, in two homes (nothing of the first run is
    reused by the second), with max_feature_nodes binding (features re-ranked every 4 batches,
    where a near-tie decided differently would select another feature)."""
    outcomes = []
    for name in ("first", "second"):
        monkeypatch.setenv("TRACERFLOW_HOME", str(tmp_path / name))
        state, run_id = run_flow(
            ["toy-clt"], PROMPTS[:1], max_feature_nodes=40, batch_size=8, threads=2
        )
        assert state.is_completed(), state.message
        assert task_states(run_id)["attribute"] == ["Completed"]  # computed, not cached
        (row,) = db_rows(
            "SELECT graph_path, graph_files_path, n_active_features, n_selected_features, "
            "replacement_score, completeness_score, pruned_replacement_score, "
            "pruned_completeness_score, attribution_threads, params_hash FROM scores_wide "
            "WHERE flow_run_id = ?",  # the view gives the paths absolute
            str(run_id),
        )
        outcomes.append(row)
    (first_graph, first_files, *first), (second_graph, second_files, *second) = outcomes

    assert first_graph.startswith(str(tmp_path / "first"))  # two artifact stores
    assert second_graph.startswith(str(tmp_path / "second"))
    n_active, n_selected = first[:2]
    assert n_selected == 40 < n_active
    assert first == second  # the counts, the four scores (==), 2 threads, the parameters
    assert first[-2] == 2
    graphs = [load_file(path) for path in (first_graph, second_graph)]
    assert graphs[0].keys() == graphs[1].keys()
    for name, value in graphs[0].items():
        assert torch.equal(value, graphs[1][name]), name
    assert sha256_of(first_graph) == sha256_of(second_graph)
    assert sha256_of(first_files) == sha256_of(second_files)


def sha256_of(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_second_run_executes_no_stage_and_rewrites_no_file(home):
    first, _ = run_flow(["toy-clt"], PROMPTS)
    assert first.is_completed(), first.message
    files_before = artifact_files(home)

    second, run_id = run_flow(["toy-clt"], PROMPTS)

    assert second.is_completed(), second.message
    states = task_states(run_id)
    stages = ("download", "convert", "attribute", "score", "export", "evaluate", "dashboards")
    for stage in stages:
        assert states[stage] and set(states[stage]) == {"Cached"}, (stage, states[stage])
    assert artifact_files(home) == files_before


def stage_folders(home) -> dict[str, set[str]]:
    """Stage -> the keys of its folders in the artifact store."""
    return {
        stage.name: {folder.name for folder in stage.iterdir()}
        for stage in (home / "artifacts").iterdir()
    }


def test_changing_one_prompt_recomputes_only_that_prompt(home):
    """Both prompts run in one task run per stage (one chunk); each keeps its own store entry
    per stage, so the changed prompt is computed and the other read back, untouched."""
    run_flow(["toy-clt"], PROMPTS)
    folders_before, files_before = stage_folders(home), artifact_files(home)
    state, run_id = run_flow(
        ["toy-clt"], [PROMPTS[0], "Alice and Bob went to the park, Bob gave a book to"]
    )
    assert state.is_completed(), state.message
    states = task_states(run_id)
    folders_after = stage_folders(home)
    for stage in ("attribute", "score", "export"):
        assert states[stage] == ["Completed"], (stage, states[stage])  # one computed prompt
        assert len(folders_after[stage] - folders_before[stage]) == 1, stage
    assert set(states["convert"]) == {"Cached"}
    files_after = artifact_files(home)
    rewritten = [path for path, mtime in files_before.items() if files_after.get(path) != mtime]
    # The transcoder's dashboards folder adds the new graph's features: it is not per prompt.
    assert {path.relative_to(home / "artifacts").parts[0] for path in rewritten} <= {"dashboards"}


def test_prompts_beyond_one_chunk_run_in_one_task_per_chunk_and_stage(home, monkeypatch):
    """Three prompts at two per task run: two chunks per stage, every prompt recorded; a prompt
    that fails in one chunk fails only its own row."""
    from tracerflow.flows import score

    monkeypatch.setattr(score, "PROMPTS_PER_TASK", 2)
    too_long = " ".join(["Mary and John went to the store."] * 200)
    prompts = [PROMPTS[0], too_long, PROMPTS[1]]
    state, run_id = run_flow(["toy-clt"], prompts)
    assert state.is_failed() and "1 of 3 items failed" in state.message
    states = task_states(run_id)
    for stage in ("attribute", "score", "export"):
        assert sorted(states[stage]) == ["Completed", "Completed"], (stage, states[stage])
    rows = dict(
        db_rows("SELECT prompt, status FROM scores_wide WHERE flow_run_id = ?", str(run_id))
    )
    assert rows == {PROMPTS[0]: "ok", too_long: "failed", PROMPTS[1]: "ok"}


def test_prompts_are_chunked_in_order_into_equal_chunks_of_at_most_the_limit():
    from tracerflow.flows.score import PROMPTS_PER_TASK, prompt_chunks

    prompts = [f"prompt {i}" for i in range(PROMPTS_PER_TASK + 1)]
    chunks = prompt_chunks(prompts)
    assert [len(chunk) for chunk in chunks] == [16, 17]
    assert [p for chunk in chunks for p in chunk] == prompts
    assert prompt_chunks(prompts[:1]) == [(prompts[0],)]
    assert prompt_chunks([]) == []
    assert [len(chunk) for chunk in prompt_chunks(prompts[:10], size=4)] == [3, 3, 4]


def test_deleting_a_stage_folder_recomputes_that_stage(home):
    run_flow(["toy-clt"], PROMPTS[:1])
    (score_folder,) = (home / "artifacts" / "score").iterdir()
    shutil.rmtree(score_folder)
    state, run_id = run_flow(["toy-clt"], PROMPTS[:1])
    assert state.is_completed(), state.message
    states = task_states(run_id)
    assert states["score"] == ["Completed"]
    assert set(states["attribute"]) == {"Cached"}
    assert (score_folder / "scores.json").is_file()


def test_a_failing_prompt_keeps_the_other_rows(home):
    too_long = " ".join(["Mary and John went to the store."] * 200)
    state, run_id = run_flow(["toy-clt"], [PROMPTS[0], too_long])
    assert state.is_failed()
    assert "1 of 2 items failed" in state.message
    rows = db_rows(
        "SELECT status, error, replacement_score FROM scores_wide WHERE flow_run_id = ? "
        "ORDER BY status DESC",
        str(run_id),
    )
    assert rows[0][0] == "ok" and rows[0][2] is not None
    assert rows[1][0] == "failed" and "tokens" in rows[1][1] and rows[1][2] is None


def test_recording_the_same_run_twice_adds_no_row(home, demo_run):
    """A retried record task (same flow run id) adds nothing and replaces nothing: recorded
    again into a copy of the demo's database."""
    from tests.storage.builders import run_info, score, transcoder
    from tracerflow.storage.database import record_run

    home.mkdir()
    shutil.copy(Settings(home=demo_run.home).database_path, get_settings().database_path)
    ((run_id,),) = db_rows("SELECT DISTINCT flow_run_id FROM scores")
    before = db_rows("SELECT * FROM scores ORDER BY score_id")
    retried = [score(transcoder("toy-plt"), builtin_prompts()[0], 0.5, 0.5)]
    again = record_run(get_settings().database_path, run_info(str(run_id)), retried)
    assert again == 0
    assert db_rows("SELECT * FROM scores ORDER BY score_id") == before


@pytest.mark.parametrize("bad", [{"max_n_logits": 0}, {"desired_logit_prob": 1.5}])
def test_bad_parameters_fail_with_a_clear_message(home, bad):
    # As a deployment passes them: JSON, checked by the flow's parameter model, not the CLI.
    request = {"transcoders": ["toy-clt"], "prompts": PROMPTS[:1], **bad}
    state = score_flow(request, return_state=True)
    assert state.is_failed()
    assert next(iter(bad)) in state.message


def test_the_thread_count_is_the_runs_else_the_setting_else_torchs_default(tmp_path):
    from tracerflow.errors import ConfigError
    from tracerflow.flows.score import attribution_threads

    assert attribution_threads(3, 1, tmp_path) == 3
    assert attribution_threads(None, 1, tmp_path) == 1
    assert attribution_threads(None, None, tmp_path) == torch.get_num_threads()
    with pytest.raises(ConfigError, match="threads must be >= 1"):
        attribution_threads(0, None, tmp_path)


def test_a_run_without_a_thread_count_records_the_setting(home, monkeypatch):
    monkeypatch.setenv("TRACERFLOW_THREADS", "1")
    state, run_id = run_flow(["toy-plt"], PROMPTS[:1])
    assert state.is_completed(), state.message
    assert db_rows("SELECT attribution_threads FROM scores WHERE flow_run_id = ?", str(run_id)) == [
        (1,)
    ]


def test_each_row_records_which_attribution_computed_its_graph(demo_run):
    """On CPU the toy presets take the fast path, and each row of the demo says so (migration
    005), and which format its transcoder was read as (006: the toy presets are checkpoints of
    the crosslayer-transcoder library)."""
    database = Settings(home=demo_run.home).database_path
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute("SELECT attribution_path, transcoder_format FROM scores").fetchall()
    assert rows == [("fast", "crosslayer-transcoder")] * 2 * len(builtin_prompts())


def series_of(run_id) -> list[tuple]:
    return db_rows(
        "SELECT status, transcoder_id, model_id, params_hash, params_json FROM scores "
        "WHERE flow_run_id = ? ORDER BY status DESC",
        str(run_id),
    )


def test_a_failed_prompt_is_recorded_in_the_series_of_its_transcoder(home, tmp_path):
    """A local folder (no preset defaults, so the batch size is the default one) with one prompt
    that fails at attribution: its row has the ok row's transcoder, model and parameters."""
    folder = shutil.copytree(resolve_source("toy-clt").path, tmp_path / "my-clt")
    too_long = " ".join(["Mary and John went to the store."] * 200)

    state, run_id = run_flow([str(folder)], [PROMPTS[0], too_long], model="toy-gpt2")

    assert state.is_failed()
    ok, failed = series_of(run_id)
    assert (ok[0], failed[0]) == ("ok", "failed")
    assert ok[1:] == failed[1:]  # transcoder_id, model_id, params_hash, params_json
    assert json.loads(failed[4])["batch_size"] == 512  # the batch size the ok row ran at


def test_a_failed_download_is_recorded_in_the_series_of_the_transcoders_earlier_runs(
    home, tmp_path
):
    folder = shutil.copytree(resolve_source("toy-clt").path, tmp_path / "my-clt")
    first, first_id = run_flow([str(folder)], PROMPTS[:1], model="toy-gpt2")
    assert first.is_completed(), first.message
    (folder / "checkpoint.safetensors").unlink()  # tonight the checkout is broken

    second, second_id = run_flow([str(folder)], PROMPTS[:1], model="toy-gpt2")

    assert second.is_failed()
    ((status, *series),) = series_of(second_id)
    assert status == "failed"
    assert [tuple(series)] == [row[1:] for row in series_of(first_id)]
    ((previous, error),) = db_rows(
        "SELECT previous_replacement_score, error FROM score_history WHERE flow_run_id = ?",
        str(second_id),
    )
    assert previous is not None and "checkpoint.safetensors" in error
