"""Read questions over the transcoder metrics (``transcoder_metrics``, migration 004): a run's
metrics, their history, the newest per-layer metrics, and two transcoders compared on the same
evaluation tokens.

``compare_metrics`` pairs two evaluations only when their tokens are the same (equal
``corpus_hash`` under the same model). Where both per-token files are still in the artifact
store it gives 95% t intervals of the mean per-token difference B − A of KL, top-1 agreement,
L0, and (scaled exactly to the metric) pooled FVU and CE loss recovered; see docs/metrics.md
("Comparing two transcoders") for what these intervals assume.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tracerflow.errors import StorageError
from tracerflow.storage.database import reading
from tracerflow.storage.queries import _dicts, parse_since, rows_per_snapshot
from tracerflow.storage.stats import MeanInterval, t975
from tracerflow.storage.store import AsOf, NoHistoryError, StoreLike

PER_TOKEN_FILE = "per_token.safetensors"  # tracerflow.tasks.evaluate's (importing it needs torch)
# The all-layers columns a person compares, in the order the tables show them.
COMPARED_METRICS = ("fvu", "l0", "dead_share", "kl", "top1_agreement", "ce_loss_recovered")

METRICS_HISTORY_COLUMNS = (
    "created_at", "flow_run_id", "suite_name", "transcoder_source", "model_name", "corpus_name",
    "corpus_n_tokens", "layer", "fvu", "fvu_change", "l0", "l0_change", "dead_share",
    "dense_1pct_share", "dense_10pct_share", "kl", "kl_change", "top1_agreement",
    "ce_loss_recovered", "ce_loss_recovered_change", "metrics_version", "corpus_hash",
)  # fmt: skip


def metrics_of_run(store: StoreLike, flow_run_id: str) -> list[dict[str, Any]]:
    """One run's all-layers metrics, a row per transcoder, in ``flows.report.METRICS_COLUMNS``
    names; none when there is no database yet."""
    try:
        with reading(store) as con:
            rows = _dicts(
                con,
                "SELECT transcoder_source, corpus_name, corpus_n_tokens, fvu, l0, dead_share, "
                "dense_1pct_share, kl, top1_agreement, ce_loss_recovered "
                "FROM transcoder_metrics_wide WHERE flow_run_id = ? AND layer IS NULL "
                "ORDER BY transcoder_source",
                [flow_run_id],
            )
    except NoHistoryError:
        return []
    for row in rows:
        row["corpus_name"] = os.path.basename(row["corpus_name"])
    return rows


def transcoder_and_since(
    transcoder: str | None, since: date | datetime | str | None
) -> tuple[list[str], list[Any]]:
    """The WHERE conditions (and their parameters) of one transcoder (source or id) and of
    rows from ``since`` on; none for what is None."""
    conditions: list[str] = []
    params: list[Any] = []
    if transcoder is not None:
        conditions.append("(transcoder_source = ? OR transcoder_id = ?)")
        params += [transcoder, transcoder]
    if since is not None:
        conditions.append("created_at >= ?")
        params.append(parse_since(since))
    return conditions, params


def metrics_history(
    store: StoreLike,
    transcoder: str | None = None,
    since: date | datetime | str | None = None,
    all_layers_only: bool = True,
    as_of: AsOf | None = None,
) -> list[dict[str, Any]]:
    """Every recorded metrics row, newest first, with the change since the previous run of its
    series (transcoder × model × evaluation corpus × layer); ``as_of`` reads a lake as it was."""
    conditions, params = transcoder_and_since(transcoder, since)
    if all_layers_only:
        conditions.append("layer IS NULL")
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    with reading(store, as_of=as_of) as con:
        return _dicts(
            con,
            f"SELECT {', '.join(METRICS_HISTORY_COLUMNS)} FROM transcoder_metrics_history {where} "
            "ORDER BY created_at DESC, flow_run_id DESC, transcoder_source, layer NULLS LAST",
            params,
        )


def latest_metrics(store: StoreLike) -> list[dict[str, Any]]:
    """The newest all-layers metrics per transcoder × model × evaluation corpus."""
    rows = rows_per_snapshot(  # the viewer's index asks on every page
        store,
        "SELECT transcoder_source, model_name, corpus_name, corpus_n_tokens, fvu, l0, "
        "dead_share, dense_1pct_share, kl, top1_agreement, ce_loss_recovered, created_at "
        "FROM latest_transcoder_metrics WHERE layer IS NULL "
        "ORDER BY transcoder_source, model_name, corpus_name",
    )
    for row in rows:
        row["corpus_name"] = os.path.basename(row["corpus_name"])
    return rows


def latest_layer_metrics(store: StoreLike, transcoder: str | None = None) -> list[dict[str, Any]]:
    """The newest metrics of every transcoder × model × corpus, per layer (layer order), with
    the density histogram as a list."""
    condition, params = "", []
    if transcoder is not None:
        condition = "AND (transcoder_source = ? OR transcoder_id = ?)"
        params = [transcoder, transcoder]
    with reading(store) as con:
        rows = _dicts(
            con,
            "SELECT transcoder_source, model_name, corpus_name, corpus_hash, layer, fvu, l0, "
            "dead_share, density_histogram_json, created_at FROM latest_transcoder_metrics "
            f"WHERE layer IS NOT NULL {condition} "
            "ORDER BY transcoder_source, model_name, corpus_hash, layer",
            params,
        )
    import json

    for row in rows:
        row["density_histogram"] = json.loads(row.pop("density_histogram_json"))
    return rows


@dataclass(frozen=True)
class MetricsPair:
    """A and B evaluated on the same tokens: their all-layers metrics and B − A, with a 95% t
    interval per metric where the per-token values allow one (None otherwise)."""

    model_name: str
    corpus_name: str
    corpus_hash: str
    n_tokens: int
    a: dict[str, Any]
    b: dict[str, Any]
    difference: dict[str, float | None]
    intervals: dict[str, MeanInterval] = field(default_factory=dict)
    note: str | None = None  # why there are no intervals, when there are none


def compare_metrics(
    store: StoreLike, artifacts_dir: Path | str, source_a: str, source_b: str
) -> list[MetricsPair]:
    """The newest all-layers metrics of A and B on every evaluation corpus both were evaluated on
    (same tokens, same model), B − A; empty when they share none."""
    with reading(store) as con:
        rows = _dicts(
            con,
            "SELECT * FROM latest_transcoder_metrics WHERE layer IS NULL "
            "AND transcoder_source IN (?, ?) ORDER BY created_at DESC",
            [source_a, source_b],
        )
    newest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for row in rows:  # newest first: keep the first per side, model and corpus
        newest.setdefault((row["transcoder_source"], row["model_name"], row["corpus_hash"]), row)
    pairs = []
    for (source, model_name, corpus_hash), a in sorted(newest.items()):
        b = newest.get((source_b, model_name, corpus_hash))
        if source != source_a or b is None:
            continue
        difference = {
            name: None if a[name] is None or b[name] is None else b[name] - a[name]
            for name in COMPARED_METRICS
        }
        intervals, note = _paired_intervals(Path(artifacts_dir), a, b)
        pairs.append(
            MetricsPair(
                model_name=model_name,
                corpus_name=os.path.basename(a["corpus_name"]),
                corpus_hash=corpus_hash,
                n_tokens=a["corpus_n_tokens"],
                a={name: a[name] for name in COMPARED_METRICS},
                b={name: b[name] for name in COMPARED_METRICS},
                difference=difference,
                intervals=intervals,
                note=note,
            )
        )
    return pairs


def _per_token(artifacts_dir: Path, evaluate_key: str) -> dict[str, np.ndarray] | None:
    from safetensors.numpy import load_file

    path = artifacts_dir / "evaluate" / evaluate_key / PER_TOKEN_FILE
    if not path.is_file():
        return None
    try:
        return load_file(str(path))
    except Exception as error:  # a damaged file: no intervals, not a failed comparison
        raise StorageError(f"{path}: cannot read the per-token values ({error})") from error


def _interval(values: np.ndarray, scale: float = 1.0) -> MeanInterval:
    """The 95% t interval of ``scale`` × the mean of ``values`` (float64)."""
    values = values.astype(np.float64)
    n = int(values.size)
    if n == 0:
        return MeanInterval(0, None, None, None)
    mean = float(values.mean()) * scale
    if n < 2:
        return MeanInterval(1, mean, None, None)
    half = t975(n - 1) * float(values.std(ddof=1)) / math.sqrt(n) * abs(scale)
    return MeanInterval(n, mean, mean - half, mean + half)


def _paired_intervals(
    artifacts_dir: Path, a: dict[str, Any], b: dict[str, Any]
) -> tuple[dict[str, MeanInterval], str | None]:
    """Per-token B − A intervals (see the module docstring), or none and why."""
    tokens_a = _per_token(artifacts_dir, a["evaluate_key"])
    tokens_b = _per_token(artifacts_dir, b["evaluate_key"])
    if tokens_a is None or tokens_b is None:
        return {}, "per-token values no longer in the artifact store: no intervals"
    if tokens_a["kl"].shape != tokens_b["kl"].shape:
        return {}, "per-token values of different lengths: no intervals"
    intervals = {
        "kl": _interval(tokens_b["kl"] - tokens_a["kl"]),
        "top1_agreement": _interval(
            tokens_b["top1_agree"].astype(np.float64) - tokens_a["top1_agree"].astype(np.float64)
        ),
        "l0": _interval(
            tokens_b["active"].sum(0).astype(np.float64)
            - tokens_a["active"].sum(0).astype(np.float64)
        ),
    }
    # Pooled FVU = Σ squared error / total variance; the variance is the original model's, the
    # same for both: FVU_B − FVU_A = mean(se_B − se_A) · N / TV, and N / TV = fvu_A / mse_A.
    if a["mse"] and a["fvu"] is not None:
        squared_error = tokens_b["squared_error"].astype(np.float64).sum(0) - tokens_a[
            "squared_error"
        ].astype(np.float64).sum(0)
        intervals["fvu"] = _interval(squared_error, scale=a["fvu"] / a["mse"])
    # CE loss recovered = (CE_abl − CE_repl) / (CE_abl − CE_orig), the denominator the same for
    # both: its B − A is −mean(ce_repl_B − ce_repl_A) / mean(CE_abl − CE_orig).
    has_next = ~np.isnan(tokens_a["ce_replacement"])
    gap = float(
        (tokens_a["ce_ablated"][has_next].astype(np.float64)
         - tokens_a["ce_original"][has_next].astype(np.float64)).mean()
    ) if has_next.any() else 0.0  # fmt: skip
    if gap != 0:
        ce_difference = tokens_b["ce_replacement"][has_next].astype(np.float64) - tokens_a[
            "ce_replacement"
        ][has_next].astype(np.float64)
        intervals["ce_loss_recovered"] = _interval(ce_difference, scale=-1.0 / gap)
    return intervals, None


@dataclass(frozen=True)
class Evaluation:
    """One recorded evaluation (run × transcoder × model × corpus): every column of its
    all-layers ``transcoder_metrics_wide`` row, and its per-layer rows in layer order."""

    all_layers: dict[str, Any]
    layers: list[dict[str, Any]]


def evaluations(
    store: StoreLike, transcoder: str | None = None, since: date | datetime | str | None = None
) -> list[Evaluation]:
    """Every recorded evaluation, newest first, of one transcoder (source or id) or all."""
    conditions, params = transcoder_and_since(transcoder, since)
    where = f"WHERE {' AND '.join(conditions)}" if conditions else ""
    with reading(store) as con:
        rows = _dicts(
            con,
            f"SELECT * FROM transcoder_metrics_wide {where} "
            "ORDER BY created_at DESC, flow_run_id DESC, transcoder_source, transcoder_id, "
            "corpus_hash, layer NULLS FIRST",
            params,
        )
    found: dict[tuple[str, str, str, str], Evaluation] = {}
    for row in rows:
        key = (row["flow_run_id"], row["transcoder_id"], row["model_id"], row["corpus_hash"])
        if row["layer"] is None:
            found[key] = Evaluation(all_layers=row, layers=[])
        elif key in found:  # NULLS FIRST: the all-layers row came first
            found[key].layers.append(row)
    return list(found.values())
