"""What a score row records of an item: everything for an ok item; for a failed one, what its
stages gave before the failure, with every fact it never learned None (never a placeholder)."""

from __future__ import annotations

from tracerflow.errors import AttributionError, SourceError
from tracerflow.flows.records import score_record
from tracerflow.flows.run_types import ItemOutcome, ScoreItem, TranscoderRun
from tracerflow.parameters import AttributionParams, RunParameters
from tracerflow.storage.records import TranscoderInfo
from tracerflow.tasks.results import (
    Attribution,
    AttributionStats,
    ExportedGraph,
    GraphScores,
    ScoredGraph,
    error_text,
)

TRANSCODER = TranscoderRun(
    source="toy-clt",
    model_name="toy-gpt2",
    parameters=RunParameters(attribution=AttributionParams(batch_size=64)),
)
RECORDED_AS = TranscoderInfo("toy-clt", None, None, "a" * 64, "clt", 3, 64, 128, "topk", {"k": 12})


def item(outcome: ItemOutcome) -> ScoreItem:
    return ScoreItem(TRANSCODER, "The cat sat on the", RECORDED_AS, outcome)


ATTRIBUTION = Attribution(
    key="k" * 64,
    graph_path="/home/artifacts/attribute/k/graph.safetensors",
    stats=AttributionStats(
        batch_size=64,
        threads=2,
        fast_path=True,
        attribution_seconds=0.5,
        phase_seconds={"total": 0.5},
        peak_memory_bytes=1000,
        n_tokens=6,
        device="cpu",
        host="here",
        model_n_layers=3,
        model_d_model=64,
        model_d_vocab=421,
        model_n_ctx=64,
    ),
)
SCORED = ScoredGraph(
    key="s" * 64,
    scores=GraphScores(
        replacement_score=0.7,
        completeness_score=0.9,
        pruned_replacement_score=0.6,
        pruned_completeness_score=0.85,
        n_active_features=300,
        n_selected_features=200,
        n_kept_features=50,
        n_logits=3,
        logit_cumulative_prob=0.96,
        n_pos=6,
    ),
)
EXPORTED = ExportedGraph(key="e" * 64, slug="toy-clt-aaaaaaaa-12345678", graph_files_path="/g.json")


def test_an_ok_item_records_its_scores_graph_and_model_shape() -> None:
    record = score_record(item(ItemOutcome(ATTRIBUTION, SCORED, EXPORTED)), run_threads=1)
    assert (record.status, record.error) == ("ok", None)
    assert (record.replacement_score, record.pruned_completeness_score) == (0.7, 0.85)
    assert (record.n_selected_features, record.n_pos, record.n_tokens) == (200, 6, 6)
    assert (record.model.n_layers, record.model.d_vocab) == (3, 421)
    assert (record.attribution_threads, record.slug) == (2, EXPORTED.slug)
    assert record.params == TRANSCODER.parameters.recorded()


def test_an_item_that_failed_after_attribution_keeps_attributions_facts_but_no_score() -> None:
    error = AttributionError("scoring failed")
    record = score_record(item(ItemOutcome(ATTRIBUTION, error=error_text(error))), run_threads=1)
    assert (record.status, record.error) == ("failed", "AttributionError: scoring failed")
    assert record.replacement_score is None and record.n_selected_features is None
    assert (record.n_tokens, record.graph_path, record.model.n_ctx) == (
        6,
        ATTRIBUTION.graph_path,
        64,
    )
    assert record.slug is None and record.graph_files_path is None


def test_an_item_that_failed_before_attribution_records_no_model_shape() -> None:
    error = SourceError("no such repo")
    record = score_record(item(ItemOutcome(error=error_text(error))), run_threads=3)
    assert record.status == "failed" and record.error == "SourceError: no such repo"
    model = record.model
    assert (model.name, model.n_layers, model.d_model, model.d_vocab, model.n_ctx) == (
        "toy-gpt2",
        None,
        None,
        None,
        None,
    )
    assert record.n_tokens is None and record.phase_seconds is None and record.graph_path is None
    assert record.attribution_threads == 3  # the run's, so the row stays in its series
    assert record.params == TRANSCODER.parameters.recorded()


def test_a_download_cached_before_formats_were_recorded_still_records_its_format(tmp_path) -> None:
    # The download key did not change when snapshots began to record their format, so a store
    # may hand back a snapshot without one: the row asks the registry of its folder instead.
    from tracerflow import toy
    from tracerflow.flows.records import snapshot_format
    from tracerflow.tasks.results import CheckpointSnapshot

    def cached(path: str) -> CheckpointSnapshot:
        return CheckpointSnapshot(
            source="toy-clt", location=path, revision=None, commit_sha=None, path=path,
            content_hash="c" * 64,
        )  # fmt: skip

    assert snapshot_format(cached(str(toy.transcoder_dir("clt")))) == "crosslayer-transcoder"
    assert snapshot_format(cached(str(tmp_path / "gone"))) is None
