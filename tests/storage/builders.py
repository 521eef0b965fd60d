"""Builders of the smallest real records and databases the storage tests need.

Also the bodies of the worker processes the tests start (they must be importable by name under
the `spawn` start method).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tracerflow.storage import ModelInfo, RunInfo, ScoreRecord, TranscoderInfo, record_run
from tracerflow.storage.subgraphs import SubgraphRecord, graph_of_slug, record_subgraph

OLD_CLT = "georglange/crosslayer-transcoder-topk-16k"
PLT = "georglange/crosslayer-transcoder-topk-plt-16k"
NEW_CLT = "./checkpoints/clt-topk-16k-v2"

IOI_PROMPTS = (
    "Mary and John went to the store, Jon gave a drink to",
    "When Alice and Bob went to the park, Bob gave a ball to",
    "After Tom and Sara arrived at the party, Sara handed a gift to",
    "Then, Anna and Mark had lunch at the cafe. Mark passed the salt to",
)
SMOKE_PROMPT = "The capital of France is"
FIRST_NIGHT = datetime(2025, 6, 1, 2, 0, tzinfo=UTC)
GPT2 = ModelInfo(name="gpt2", n_layers=12, d_model=768, d_vocab=50257, n_ctx=1024)
NOTEBOOK_PARAMS: dict[str, Any] = {
    "max_n_logits": 10,
    "desired_logit_prob": 0.95,
    "max_feature_nodes": 8192,
    "batch_size": 256,
    "node_threshold": 0.8,
    "edge_threshold": 0.98,
    "offload": None,
    "dtype": "float32",
}


def transcoder(source: str = OLD_CLT, kind: str = "clt", content_hash: str = "") -> TranscoderInfo:
    return TranscoderInfo(
        source=source,
        revision="main",
        commit_sha=f"sha-of-{source}",
        content_hash=content_hash or f"weights-of-{source}",
        kind=kind,
        n_layers=12,
        d_model=768,
        d_features=16000,
        activation="topk",
        activation_params={"k": 16},
    )


def run_info(flow_run_id: str, started_at: datetime = FIRST_NIGHT, **overrides: Any) -> RunInfo:
    values: dict[str, Any] = {
        "flow_run_id": flow_run_id,
        "flow_name": "score-suite",
        "deployment_name": "nightly-ioi",
        "suite_name": "ioi",
        "started_at": started_at,
        "finished_at": None,
        "status": "running",
        "tracerflow_version": "0.1.0",
        "circuit_tracer_version": "0.5.0",
        "torch_version": "2.13.0",
        "device": "cpu",
        "host": "test-host",
    }
    values.update(overrides)
    return RunInfo(**values)


def score(
    scored: TranscoderInfo,
    prompt: str,
    replacement: float | None,
    completeness: float | None,
    created_at: datetime = FIRST_NIGHT,
    status: str = "ok",
    slug: str | None = None,
    params: dict[str, Any] | None = None,
    model: ModelInfo = GPT2,
) -> ScoreRecord:
    failed = status == "failed"
    return ScoreRecord(
        transcoder=scored,
        model=model,
        prompt=prompt,
        n_tokens=len(prompt.split()) + 1,
        params=dict(NOTEBOOK_PARAMS if params is None else params),
        status=status,
        error="AttributionError: no active features" if failed else None,
        replacement_score=None if failed else replacement,
        completeness_score=None if failed else completeness,
        pruned_replacement_score=None if failed else (replacement or 0) - 0.05,
        pruned_completeness_score=None if failed else (completeness or 0) - 0.03,
        n_active_features=None if failed else 3456,
        n_selected_features=None if failed else 2048,
        n_logits=None if failed else 10,
        logit_cumulative_prob=None if failed else 0.95,
        n_pos=None if failed else 15,
        phase_seconds=None if failed else {"precompute": 0.5, "attribute": 48.0},
        attribution_seconds=None if failed else 49.0,
        peak_memory_bytes=None if failed else 3_800_000_000,
        attribution_threads=2,
        graph_path=None if failed else f"/artifacts/attribute/{slug or 'x'}/graph.pt",
        graph_files_path=None if failed else (f"/graph-files/{slug}.json" if slug else None),
        slug=None if failed else slug,
        created_at=created_at,
    )


def nightly_replacement(source: str, night: int, prompt_index: int) -> float:
    """A made-up but deterministic score: each transcoder improves a little every night."""
    base = {OLD_CLT: 0.70, PLT: 0.71, NEW_CLT: 0.74}[source]
    # The new CLT helps some prompts more than others, so comparisons have a spread.
    bonus = 0.006 * prompt_index**2 if source == NEW_CLT else 0.0
    return round(base + 0.004 * night - 0.03 * prompt_index + bonus, 6)


def populate(db_path: Path, nights: int = 5) -> None:
    """A history like a real one: nightly IOI runs of the CLT and PLT, the new CLT joining on
    the last two nights, one failed score, one smoke run, graphs re-exported every night."""
    for night in range(nights):
        started_at = FIRST_NIGHT + timedelta(days=night)
        sources = [(OLD_CLT, "clt"), (PLT, "plt")]
        if night >= nights - 2:
            sources.append((NEW_CLT, "clt"))
        records = []
        for source, kind in sources:
            for prompt_index, prompt in enumerate(IOI_PROMPTS):
                created_at = started_at + timedelta(minutes=len(records) + 1)
                failed = source == PLT and night == 2 and prompt_index == 1
                replacement = nightly_replacement(source, night, prompt_index)
                records.append(
                    score(
                        transcoder(source, kind),
                        prompt,
                        replacement,
                        round(replacement + 0.2, 6),
                        created_at=created_at,
                        status="failed" if failed else "ok",
                        slug=f"ioi-{source.rsplit('/', 1)[-1]}-{prompt_index}",
                    )
                )
        record_run(
            db_path,
            run_info(f"nightly-{night}", started_at, status="completed",
                     finished_at=started_at + timedelta(hours=1)),
            records,
        )  # fmt: skip
    smoke_at = FIRST_NIGHT + timedelta(days=nights - 1, hours=12)
    record_run(
        db_path,
        run_info("smoke-1", smoke_at, deployment_name=None, suite_name="smoke", status="completed"),
        [score(transcoder(OLD_CLT), SMOKE_PROMPT, 0.8, 0.95, created_at=smoke_at)],
    )
    # One saved subgraph of the old CLT's last graph of the first prompt (numbers made up).
    scored = graph_of_slug(db_path, f"ioi-{OLD_CLT.rsplit('/', 1)[-1]}-0")
    record_subgraph(
        db_path,
        SubgraphRecord(
            score_id=scored.score_id,
            slug=scored.slug,
            pinned_ids=("1_7_3", "err_0_2"),
            supernodes=(("group", "1_7_3"),),
            n_pinned_features=1,
            n_selected_features=40,
            graph_replacement_score=scored.replacement_score,
            graph_completeness_score=scored.completeness_score,
            subgraph_replacement_score=0.25,
            subgraph_completeness_score=0.625,
            scored_by="cli",
            created_at=smoke_at,
        ),
    )


TABLES = ("schema_version", "transcoders", "models", "prompts", "runs", "scores")


def snapshot(db_path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, sorted: two equal snapshots mean an unchanged database."""
    import duckdb

    with duckdb.connect(str(db_path), read_only=True) as con:
        return {table: sorted(con.execute(f"SELECT * FROM {table}").fetchall(), key=repr)
                for table in TABLES}  # fmt: skip


# Worker processes (spawn) -------------------------------------------------------------------


def record_run_at_barrier(db_path: str, run_number: int, barrier: Any) -> None:
    """Wait until every worker is ready, then record one run of 4 scores at the same moment."""
    records = [
        score(transcoder(OLD_CLT), prompt, 0.7 + run_number / 100, 0.9) for prompt in IOI_PROMPTS
    ]
    barrier.wait()
    record_run(db_path, run_info(f"concurrent-{run_number}"), records, timeout_s=120)


class DiesWhenWritten:
    """A parameter value whose text form ends the process: a crash in the middle of a write."""

    def __str__(self) -> str:
        os._exit(3)


def record_run_and_die_mid_write(db_path: str) -> None:
    records = [score(transcoder(OLD_CLT), prompt, 0.7, 0.9) for prompt in IOI_PROMPTS[:2]]
    records.append(
        score(transcoder(OLD_CLT), IOI_PROMPTS[2], 0.7, 0.9, params={"dtype": DiesWhenWritten()})
    )
    record_run(db_path, run_info("killed-mid-write"), records)
