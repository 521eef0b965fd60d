"""SAEBench core-evaluation results from tracerflow's transcoder metrics.

SAEBench (the ``sae-bench`` package) publishes one JSON per evaluation type and SAE; the core
type's schema is ``sae_bench/evals/core/eval_output_schema_core.json`` (a copy is test data in
``tests/interop/``). ``core_eval`` writes one such result per recorded tracerflow evaluation
(run × transcoder × model × corpus), from its all-layers row; the per-layer rows go under
``eval_result_unstructured``.

The mapping, and where the definitions differ, is in docs/metrics.md ("SAEBench results"). In
short: a transcoder reconstructs the MLP *output* from the residual stream, an SAE its own input;
tracerflow's whole-transcoder numbers are pooled or summed over layers, SAEBench's are per hook;
tracerflow's ablation zeroes every MLP output, SAEBench's the one hooked activation.

Every metric SAEBench defines and tracerflow does not compute is written as -1: the schema types
each metric as a number (``null`` does not validate), and -1 is what SAEBench's own core
evaluation writes for a metric it could not compute (``replace_nans_with_negative_one``). Their
names are listed in ``eval_result_unstructured.tracerflow.not_computed``, so a reader never has
to guess which -1 is a sentinel.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tracerflow import __version__

EVAL_TYPE_ID = "core"
NOT_COMPUTED = -1
_Row = dict[str, Any]


def _column(name: str) -> Callable[[_Row], float | None]:
    return lambda row: row[name]


def _one_minus(name: str) -> Callable[[_Row], float | None]:
    return lambda row: None if row[name] is None else 1.0 - row[name]


# SAEBench's core metrics by category -> how a tracerflow all-layers row gives each; None: no
# counterpart (docs/metrics.md says why for each).
CORE_METRICS: dict[str, dict[str, Callable[[_Row], float | None] | None]] = {
    "model_behavior_preservation": {
        "kl_div_score": None,  # needs the ablated model's KL, which is not computed
        "kl_div_with_ablation": None,
        "kl_div_with_sae": _column("kl"),
    },
    "model_performance_preservation": {
        "ce_loss_score": _column("ce_loss_recovered"),
        "ce_loss_with_ablation": _column("ce_ablated"),
        "ce_loss_with_sae": _column("ce_replacement"),
        "ce_loss_without_sae": _column("ce_original"),
    },
    "reconstruction_quality": {
        "explained_variance": _one_minus("fvu"),
        "explained_variance_legacy": None,
        "mse": None,  # SAEBench also divides by the batch's token count; tracerflow's is per layer
        "cossim": None,
    },
    "shrinkage": {
        "l2_norm_in": None,
        "l2_norm_out": None,
        "l2_ratio": None,
        "relative_reconstruction_bias": None,
    },
    "sparsity": {"l0": _column("l0"), "l1": None},
    "token_stats": {
        "total_tokens_eval_reconstruction": _column("corpus_n_tokens"),
        "total_tokens_eval_sparsity_variance": _column("corpus_n_tokens"),
    },
    "misc_metrics": {
        "freq_over_1_percent": _column("dense_1pct_share"),
        "freq_over_10_percent": _column("dense_10pct_share"),
        "normalized_freq_over_1_percent": None,
        "normalized_freq_over_10_percent": None,
        "average_max_encoder_cosine_sim": None,
        "average_max_decoder_cosine_sim": None,
        "frac_alive": _one_minus("dead_share"),
    },
}
# The per-layer columns kept under eval_result_unstructured.
LAYER_COLUMNS = ("layer", "n_features", "fvu", "mse", "l0", "dead_share", "dense_1pct_share")


def core_eval(all_layers: _Row, layers: list[_Row]) -> dict[str, Any]:
    """The SAEBench core-eval result of one tracerflow evaluation: its all-layers
    ``transcoder_metrics_wide`` row and its per-layer rows."""
    metrics: dict[str, dict[str, float | int]] = {}
    not_computed: list[str] = []
    for category, fields in CORE_METRICS.items():
        metrics[category] = {}
        for name, value_of in fields.items():
            value = value_of(all_layers) if value_of is not None else None
            if value is None:  # no counterpart, or undefined on this run (a 0 denominator)
                not_computed.append(f"{category}.{name}")
            metrics[category][name] = NOT_COMPUTED if value is None else value
    created_at: datetime = all_layers["created_at"]
    return {
        "eval_type_id": EVAL_TYPE_ID,
        "eval_config": {
            "model_name": all_layers["model_name"],
            "dataset": all_layers["corpus_name"],
            "compute_kl": True,
            "compute_ce_loss": True,
            "compute_l2_norms": False,
            "compute_sparsity_metrics": True,
            "compute_variance_metrics": True,
            "compute_featurewise_density_statistics": False,
            "compute_featurewise_weight_based_metrics": False,
            "exclude_special_tokens_from_reconstruction": True,  # BOS is never evaluated
        },
        # A UUID, as the schema asks, but a stable one: exporting twice gives the same file.
        "eval_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tracerflow:{all_layers['metrics_id']}")),
        "datetime_epoch_millis": int(created_at.replace(tzinfo=UTC).timestamp() * 1000),
        "eval_result_metrics": metrics,
        "eval_result_details": [],  # per-feature metrics are not recorded
        "sae_bench_commit_hash": "",  # not computed by SAEBench
        "sae_lens_id": None,
        "sae_lens_release_id": None,
        "sae_lens_version": None,
        "sae_cfg_dict": {
            "architecture": all_layers["transcoder_kind"],
            "model_name": all_layers["model_name"],
            "d_sae": layers[0]["n_features"] if layers else all_layers["n_features"],
            "n_layers": len(layers),
        },
        "eval_result_unstructured": {
            "tracerflow": {
                "version": __version__,
                "not_computed": not_computed,
                "definitions": "docs/metrics.md of tracerflow: the all-layers row (pooled FVU, "
                "l0 summed over layers, every MLP output replaced or ablated)",
                "flow_run_id": all_layers["flow_run_id"],
                "transcoder_source": all_layers["transcoder_source"],
                "transcoder_content_hash": all_layers["transcoder_content_hash"],
                "corpus_hash": all_layers["corpus_hash"],
                "metrics_version": all_layers["metrics_version"],
                "top1_agreement": all_layers["top1_agreement"],
                "per_layer": [{c: row[c] for c in LAYER_COLUMNS} for row in layers],
            }
        },
    }


def result_file_name(all_layers: _Row) -> str:
    """``<transcoder>_<evaluation>_eval_results.json``, SAEBench's naming, with anything but
    letters, digits, ``.``, ``_`` and ``-`` in the source replaced (it becomes a file name)."""
    source = re.sub(r"[^A-Za-z0-9._-]+", "-", all_layers["transcoder_source"]).strip(".-")
    return f"{source or 'transcoder'}_{all_layers['metrics_id'][:12]}_eval_results.json"
