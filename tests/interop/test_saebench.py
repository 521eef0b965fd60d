"""SAEBench core-eval results: each recorded evaluation becomes one JSON that SAEBench's own
schema (from the ``sae-bench`` wheel) accepts, its metrics mapped as docs/metrics.md says, and
every metric without a tracerflow counterpart written as SAEBench's -1 and listed."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import jsonschema
import pytest
from typer.testing import CliRunner

from tracerflow.cli import app
from tracerflow.interop.saebench import CORE_METRICS, NOT_COMPUTED, core_eval, result_file_name

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "saebench-core-schema.json").read_text("utf-8")
)


def assert_valid(result: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    assert [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(result)] == []


def all_layers_row(**overrides: Any) -> dict[str, Any]:
    """A ``transcoder_metrics_wide`` all-layers row with round numbers."""
    return {
        "metrics_id": "0123456789abcdef" * 4, "flow_run_id": "run-1", "layer": None,
        "transcoder_source": "owner/clt@v2", "transcoder_content_hash": "ab" * 32,
        "transcoder_kind": "clt", "model_name": "gpt2-small", "corpus_name": "prompts",
        "corpus_hash": "cd" * 32, "corpus_n_tokens": 1000, "metrics_version": "1",
        "n_features": 24, "fvu": 0.25, "mse": 3.0, "l0": 40.0, "dead_share": 0.125,
        "dense_1pct_share": 0.5, "dense_10pct_share": 0.0625, "kl": 0.75,
        "top1_agreement": 0.9, "ce_original": 3.0, "ce_replacement": 3.5, "ce_ablated": 5.0,
        "ce_loss_recovered": 0.75, "created_at": datetime(2026, 12, 6, 12, 0, 0),
        **overrides,
    }  # fmt: skip


def layer_row(layer: int) -> dict[str, Any]:
    return {"layer": layer, "n_features": 12, "fvu": 0.2 + layer / 10, "mse": 1.5, "l0": 20.0,
            "dead_share": 0.125, "dense_1pct_share": 0.5}  # fmt: skip


def test_a_hand_made_evaluation_maps_to_saebench_fields_and_validates() -> None:
    result = core_eval(all_layers_row(), [layer_row(0), layer_row(1)])
    assert_valid(result)
    metrics = result["eval_result_metrics"]
    assert metrics["model_behavior_preservation"]["kl_div_with_sae"] == 0.75
    performance = metrics["model_performance_preservation"]
    assert performance == {"ce_loss_score": 0.75, "ce_loss_with_ablation": 5.0,
                           "ce_loss_with_sae": 3.5, "ce_loss_without_sae": 3.0}  # fmt: skip
    # SAEBench's ce_loss_score is (CE_ablated − CE_sae) / (CE_ablated − CE_orig): (5 − 3.5) / 2
    assert performance["ce_loss_score"] == (5.0 - 3.5) / (5.0 - 3.0)
    assert metrics["reconstruction_quality"]["explained_variance"] == 0.75  # 1 − FVU
    assert metrics["sparsity"]["l0"] == 40.0
    assert metrics["misc_metrics"]["frac_alive"] == 0.875  # 1 − dead share
    assert metrics["misc_metrics"]["freq_over_1_percent"] == 0.5
    assert metrics["token_stats"]["total_tokens_eval_reconstruction"] == 1000
    assert result["datetime_epoch_millis"] == 1_796_558_400_000  # 2026-12-06 12:00 UTC
    assert result["sae_cfg_dict"]["d_sae"] == 12
    unstructured = result["eval_result_unstructured"]["tracerflow"]
    assert [row["layer"] for row in unstructured["per_layer"]] == [0, 1]
    assert unstructured["top1_agreement"] == 0.9


def test_every_metric_without_a_counterpart_is_minus_one_and_listed() -> None:
    result = core_eval(all_layers_row(ce_loss_recovered=None), [])
    assert_valid(result)
    listed = result["eval_result_unstructured"]["tracerflow"]["not_computed"]
    unmapped = [
        f"{category}.{name}"
        for category, fields in CORE_METRICS.items()
        for name, value_of in fields.items()
        if value_of is None
    ]
    assert set(listed) == {*unmapped, "model_performance_preservation.ce_loss_score"}
    for name in listed:
        category, metric = name.split(".")
        assert result["eval_result_metrics"][category][metric] == NOT_COMPUTED
    # Every metric the schema requires is there: mapped or listed.
    for category, fields in CORE_METRICS.items():
        reference = SCHEMA["$defs"]["CoreMetricCategories"]["properties"][category]["$ref"]
        required = SCHEMA["$defs"][reference.split("/")[-1]]["required"]
        assert sorted(required) == sorted(fields), category


def test_exporting_twice_gives_the_same_ids_and_file_names_are_safe() -> None:
    row = all_layers_row(transcoder_source="../../etc/a b")
    assert core_eval(row, [])["eval_id"] == core_eval(row, [])["eval_id"]
    name = result_file_name(row)
    assert "/" not in name and " " not in name and name.endswith("_eval_results.json")
    assert not name.startswith(".")


def test_export_saebench_writes_one_valid_file_per_recorded_evaluation(
    demo_home: Path, tmp_path: Path
) -> None:
    database = tmp_path / "scores.duckdb"
    shutil.copy2(demo_home / "scores.duckdb", database)
    with duckdb.connect(str(database), read_only=True) as con:
        rows = con.execute(
            "SELECT metrics_id, kl, fvu FROM transcoder_metrics WHERE layer IS NULL"
        ).fetchall()
    assert len(rows) >= 2  # the demo evaluates the toy CLT and PLT
    out = tmp_path / "saebench"
    result = CliRunner().invoke(app, ["export", "saebench", "--out", str(out),
                                      "--store", str(database)])  # fmt: skip
    assert result.exit_code == 0, result.output
    files = sorted(out.glob("*_eval_results.json"))
    assert len(files) == len(rows) and result.output.count("\n") == len(rows)
    by_id = {metrics_id[:12]: (kl, fvu) for metrics_id, kl, fvu in rows}
    for path in files:
        written = json.loads(path.read_text("utf-8"))
        assert_valid(written)
        kl, fvu = by_id[path.name.split("_")[-3]]
        metrics = written["eval_result_metrics"]
        assert metrics["model_behavior_preservation"]["kl_div_with_sae"] == kl
        assert metrics["reconstruction_quality"]["explained_variance"] == pytest.approx(1 - fvu)
    one = ["--out", str(tmp_path / "one"), "--store", str(database), "--transcoder", "toy-clt"]
    only = CliRunner().invoke(app, ["export", "saebench", *one])
    assert only.exit_code == 0 and only.output.count("\n") == 1, only.output
