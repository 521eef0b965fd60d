"""The dashboards stage in the scoring flow, on the toy CLT: one pack per transcoder holding its
graphs' features, computed once and grown only by what is missing; a failed stage loses no score.

The corpus is a small grammar file (a handful of sentences) so that each run streams it in a
blink; the toy presets' default corpus is the demo's (tests/viewer/test_demo_in_browser.py).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import pytest

from tests.flows.test_score_flow import run_flow, task_states
from tracerflow.dashboards.pack import (
    INDEX_FILE,
    current_pack_dir,
    graph_file_features,
    pack_features,
    read_feature_pack,
)
from tracerflow.model_sources import model_identity
from tracerflow.settings import get_settings
from tracerflow.storage.artifacts import ArtifactStore
from tracerflow.tasks import dashboards as dashboards_module
from tracerflow.tasks.convert import convert_snapshot
from tracerflow.tasks.dashboards import (
    FEATURES_DIR,
    build_dashboards,
    corpus_identity,
    dashboard_corpus,
    feature_pack_name,
)
from tracerflow.tasks.download import resolve_source
from tracerflow.tasks.results import ModelSpec
from tracerflow.toy.grammar import sample_sentences

PROMPTS = [
    "Mary and John went to the store, John gave a drink to",
    "When Alice and Bob went to the park, Bob gave a ball to",
]


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    sentences = sample_sentences(24, held_out=True, seed=3)
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": s.text}) + "\n" for s in sentences))
    return path


def graph_files(home: Path) -> list[Path]:
    return sorted(
        p for p in (home / "graph-files").glob("*.json") if p.name != "graph-metadata.json"
    )


def test_each_transcoder_gets_one_pack_of_its_graphs_features(home: Path, small_corpus: Path):
    state, run_id = run_flow(["toy-clt", "toy-plt"], PROMPTS[:1], corpus=str(small_corpus))

    assert state.is_completed(), state.message
    assert task_states(run_id)["dashboards"] == ["Completed", "Completed"]  # once per transcoder
    packs = home / "graph-files" / FEATURES_DIR
    for graph in graph_files(home):
        scan = json.loads(graph.read_text())["metadata"]["scan"]
        assert pack_features(packs / scan) == graph_file_features(graph)
    assert len([path for path in packs.iterdir() if path.is_dir()]) == 2


def test_all_features_covers_every_feature_of_the_transcoder(home: Path, small_corpus: Path):
    state, _ = run_flow(["toy-plt"], PROMPTS[:1], corpus=str(small_corpus), all_features=True)

    assert state.is_completed(), state.message
    (graph,) = graph_files(home)
    scan = json.loads(graph.read_text())["metadata"]["scan"]
    every = {(layer, index) for layer in range(3) for index in range(512)}
    assert pack_features(home / "graph-files" / FEATURES_DIR / scan) == every


def test_a_graph_more_computes_only_the_features_still_missing(
    home: Path, small_corpus: Path, monkeypatch: pytest.MonkeyPatch
):
    state, _ = run_flow(["toy-clt"], PROMPTS, corpus=str(small_corpus))
    assert state.is_completed(), state.message
    first_graph, second_graph = graph_files(home)
    first, second = graph_file_features(first_graph), graph_file_features(second_graph)
    assert second - first  # the second prompt's graph has features the first's lacks
    # The stage itself, into a store and graph folder of its own, graph by graph.
    store = ArtifactStore(home / "own-store")
    converted = convert_snapshot(resolve_source("toy-clt"), "float32", store)
    model = ModelSpec(
        name="toy-gpt2", identity=model_identity("toy-gpt2"), dtype="float32", device="cpu"
    )
    scan = feature_pack_name(
        converted.content_hash, model.identity, corpus_identity(str(small_corpus), PROMPTS)
    )
    assert scan == json.loads(first_graph.read_text())["metadata"]["scan"]  # the flow's name

    def build(graphs: list[Path]):
        return build_dashboards(
            model, converted, scan, str(small_corpus), PROMPTS, graphs, False, store, home / "own"
        )

    only_first = build([first_graph])
    pack = home / "own" / FEATURES_DIR / scan
    first_records = read_feature_pack(pack)
    both = build([first_graph, second_graph])
    # A complete pack is found without tokenizing the corpus (the corpus's summary is kept in
    # the store): no `transformers` import or tokenizer in a cached re-run.
    with monkeypatch.context() as patched:
        patched.setattr(dashboards_module, "dashboard_corpus", _no_tokenizing)
        again = build([first_graph, second_graph])

    assert (only_first.n_computed, only_first.cached) == (len(first), False)
    assert (both.n_computed, both.cached) == (len(second - first), False)
    assert (again.n_computed, again.cached) == (0, True)
    assert both.key == only_first.key == again.key  # one folder per (transcoder, model, corpus)
    summary = dashboard_corpus(model.name, str(small_corpus), PROMPTS).summary()
    assert (again.corpus_sha256, again.corpus_tokens) == (summary.sha256, summary.n_text_tokens)
    assert pack_features(pack) == first | second
    merged = read_feature_pack(pack)
    assert all(merged[feature] == record for feature, record in first_records.items())
    # The flow's own pack, computed in one go over both graphs, is the same bytes.
    flow_pack = current_pack_dir(home / "graph-files" / FEATURES_DIR / scan)
    own_pack = current_pack_dir(pack)
    assert flow_pack is not None and own_pack is not None
    assert flow_pack.name == own_pack.name  # the version: a hash of the files
    for name in (INDEX_FILE, "layer_0.bin", "layer_1.bin", "layer_2.bin"):
        assert (own_pack / name).read_bytes() == (flow_pack / name).read_bytes(), name
    # Another corpus (the prompts: what `./my-clt` without a preset streams) is another pack
    # and another store folder: the first pack is left as it was (issue 26).
    on_prompts = feature_pack_name(
        converted.content_hash, model.identity, corpus_identity(None, PROMPTS)
    )
    other = build_dashboards(
        model, converted, on_prompts, None, PROMPTS, [first_graph], False, store, home / "own"
    )
    assert on_prompts != scan and other.key != both.key
    assert current_pack_dir(pack) == own_pack and read_feature_pack(pack) == merged
    assert pack_features(home / "own" / FEATURES_DIR / on_prompts) == first


def _no_tokenizing(*args: object) -> None:
    raise AssertionError("the corpus was tokenized for a pack the store holds whole")


def test_a_failed_dashboards_stage_keeps_every_score_and_publishes_nothing(
    home: Path, tmp_path: Path
):
    # A deployment's run reads the corpus only in the stage: a bad line fails the stage alone.
    corpus = tmp_path / "bad.jsonl"
    corpus.write_text('{"text": "Mary and John went to the store"}\n{"txt": "oops"}\n')

    state, run_id = run_flow(["toy-clt"], PROMPTS[:1], corpus=str(corpus))

    assert state.is_failed()
    assert "feature dashboards failed for 1 transcoder(s); every score was recorded" in (
        state.message or ""
    )
    assert "bad.jsonl:2" in (state.message or "")
    with duckdb.connect(str(get_settings().database_path), read_only=True) as con:
        statuses = con.execute(
            "SELECT status FROM scores_wide WHERE flow_run_id = ?", [str(run_id)]
        ).fetchall()
        run_status = con.execute(
            "SELECT status FROM runs WHERE flow_run_id = ?", [str(run_id)]
        ).fetchall()
    assert statuses == [("ok",)]
    assert run_status == [("completed",)]  # the scores' status: all of them are there
    assert task_states(run_id)["dashboards"] == ["Failed"]
    assert not any((home / "graph-files" / FEATURES_DIR).glob(f"*/*/{INDEX_FILE}"))
    assert not any((home / "graph-files" / FEATURES_DIR).glob(f"*/{INDEX_FILE}"))
    assert not (home / "artifacts" / "dashboards").exists()


def test_a_pack_is_never_published_through_a_link_out_of_the_graph_folder(
    home: Path, small_corpus: Path, tmp_path: Path
):
    """A ``features/<scan>`` symlink planted to another folder: the run refuses to publish
    there (it used to write the pack into the link's target and overwrite it on the next run);
    the scores are recorded and the other folder is left as it was."""
    state, _ = run_flow(["toy-clt"], PROMPTS[:1], corpus=str(small_corpus))
    assert state.is_completed(), state.message
    (graph,) = graph_files(home)
    scan = json.loads(graph.read_text())["metadata"]["scan"]
    pack = home / "graph-files" / FEATURES_DIR / scan
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("mine")
    shutil.rmtree(pack)
    pack.symlink_to(elsewhere, target_is_directory=True)

    state, _ = run_flow(["toy-clt"], PROMPTS, corpus=str(small_corpus))  # a new graph

    assert state.is_failed()
    assert f"{pack} is a symlink: tracerflow publishes into" in (state.message or "")
    assert sorted(path.name for path in elsewhere.iterdir()) == ["notes.txt"]
