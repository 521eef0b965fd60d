"""Read questions over a training run's checkpoints (``transcoders.training_step``): which of
them the database holds scores of, and their curve (scores and quality metrics by step).

A training run is the folder its checkpoint folders sit in: the checkpoints of ``run/step-*``
are recorded under their own paths, and their parent folder names their run. The curve reads
the ``transcoder_quality`` view (mean of each checkpoint's newest score per prompt, beside its
newest all-layers metrics), so a checkpoint scored twice counts once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from tracerflow.storage.database import reading
from tracerflow.storage.queries import _dicts
from tracerflow.storage.records import prompt_id
from tracerflow.storage.store import NoHistoryError, StoreLike

# What ``history --by step`` shows, most important first (a narrow terminal drops the last).
CURVE_COLUMNS = (
    "training_run", "training_step", "replacement_mean", "completeness_mean", "fvu", "l0",
    "kl", "ce_loss_recovered", "pruned_replacement_mean", "pruned_completeness_mean",
    "top1_agreement", "dead_share", "n_prompts", "model_name", "corpus_name",
    "transcoder_source", "params_hash",
)  # fmt: skip


def training_run(source: str) -> str:
    """The training run a checkpoint belongs to: the folder its checkpoint folder sits in."""
    return os.path.dirname(os.path.normpath(source))


def scored_checkpoints(
    store: StoreLike, checkpoints: Sequence[tuple[str, int | None]], prompts: Sequence[str]
) -> set[tuple[str, int | None]]:
    """The (source, training step) pairs of ``checkpoints`` that hold a successful score on
    every prompt of ``prompts``, whatever the run, model or parameters; a checkpoint without a
    step is matched by its source alone. None when there is no history yet."""
    if not checkpoints or not prompts:
        return set()
    wanted = {prompt_id(prompt) for prompt in prompts}
    sources = sorted({source for source, _ in checkpoints})
    placeholders = ", ".join("?" for _ in sources)
    prompt_placeholders = ", ".join("?" for _ in wanted)
    try:
        with reading(store) as con:
            found = con.execute(
                f"""
                SELECT t.source, t.training_step, count(DISTINCT s.prompt_id)
                FROM scores s JOIN transcoders t USING (transcoder_id)
                WHERE s.status = 'ok' AND t.source IN ({placeholders})
                    AND s.prompt_id IN ({prompt_placeholders})
                GROUP BY t.source, t.training_step
                """,
                [*sources, *sorted(wanted)],
            ).fetchall()
    except NoHistoryError:
        return set()
    complete = {(source, step) for source, step, n in found if n == len(wanted)}
    return {(source, step) for source, step in checkpoints if (source, step) in complete}


def _names(row: dict[str, Any], transcoder: str) -> bool:
    """Whether ``transcoder`` names the checkpoint of ``row``: its training run's folder, its
    own source (either spelled with or without a trailing slash) or its transcoder id."""
    wanted = os.path.normpath(os.path.expanduser(transcoder))
    return transcoder == row["transcoder_id"] or wanted in (
        row["training_run"],
        os.path.normpath(row["transcoder_source"]),
    )


def training_curve(store: StoreLike, transcoder: str | None = None) -> list[dict[str, Any]]:
    """Every checkpoint with a training step, by run and step: its mean scores over the prompts
    it has a newest score on (per model and parameter set) and its newest all-layers metrics
    (one row per evaluation corpus; NULL metrics where none were computed).

    ``transcoder``: a training run's folder, a checkpoint's source or a transcoder id."""
    with reading(store) as con:
        rows = _dicts(
            con,
            "SELECT q.*, t.training_step FROM transcoder_quality q "
            "JOIN transcoders t USING (transcoder_id) WHERE t.training_step IS NOT NULL",
            [],
        )
    curve = []
    for row in rows:
        row["training_run"] = training_run(row["transcoder_source"])
        if transcoder is not None and not _names(row, transcoder):
            continue
        if row.get("corpus_name"):
            row["corpus_name"] = os.path.basename(row["corpus_name"])
        curve.append(row)
    return sorted(
        curve,
        key=lambda row: (
            row["training_run"],
            row["model_name"],
            row["params_hash"],
            row.get("corpus_name") or "",
            row["training_step"],
            row["transcoder_source"],
        ),
    )
