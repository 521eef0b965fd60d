"""Persistence: the content-addressed artifact store (``artifacts``) and the score database,
every score tracerflow computes with its provenance, in DuckDB.

A pure library (no Prefect): the flow's `record` stage calls `record_run` once per flow run; the
CLI and the viewer read through `queries`. The schema, its migrations and example queries are
documented in ``docs/database.md``.
"""

from tracerflow.storage.database import open_database, reading, record_run
from tracerflow.storage.queries import (
    CompareResult,
    PromptScore,
    SuiteRunScores,
    compare,
    graph_index,
    history,
    previous_suite_run_scores,
    run_sql,
    transcoder_summary,
)
from tracerflow.storage.records import ModelInfo, RunInfo, ScoreRecord, TranscoderInfo

__all__ = [
    "CompareResult",
    "ModelInfo",
    "PromptScore",
    "RunInfo",
    "ScoreRecord",
    "SuiteRunScores",
    "TranscoderInfo",
    "compare",
    "graph_index",
    "history",
    "open_database",
    "previous_suite_run_scores",
    "reading",
    "record_run",
    "run_sql",
    "transcoder_summary",
]
