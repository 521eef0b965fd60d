"""The ``subgraphs`` table (migration "subgraph scores of pinned node sets"): which score row a
viewer slug names, recording a subgraph's four numbers beside it, and reading them back for
``history --subgraphs``, ``compare`` and the viewer's index."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb

from tracerflow.errors import StorageError
from tracerflow.storage.database import reading, write_store
from tracerflow.storage.queries import _dicts
from tracerflow.storage.records import stable_id, to_utc_naive
from tracerflow.storage.store import AsOf, NoHistoryError, StoreLike, parse_store

WRITE_TIMEOUT_S = 60.0

# Every column of ``subgraphs_wide`` (what csv and json carry), most important first.
SUBGRAPH_COLUMNS = (
    "created_at", "slug", "transcoder_source", "prompt", "n_pinned_features",
    "n_selected_features", "graph_replacement_score", "graph_completeness_score",
    "pruned_replacement_score", "pruned_completeness_score", "subgraph_replacement_score",
    "subgraph_completeness_score", "scored_by", "pinned_ids_json", "supernodes_json",
    "model_name", "replacement_score", "completeness_score", "suite_name", "params_hash",
    "flow_run_id", "score_id", "subgraph_id",
)  # fmt: skip


@dataclass(frozen=True)
class ScoredGraphRow:
    """The score row a slug names (its newest successful one): where its graph file is, the
    thread count it was scored at, and its recorded scores."""

    score_id: str
    slug: str
    graph_path: str
    attribution_threads: int | None
    replacement_score: float
    completeness_score: float


@dataclass(frozen=True)
class SubgraphRecord:
    """One row of ``subgraphs``."""

    score_id: str
    slug: str
    pinned_ids: tuple[str, ...]
    supernodes: tuple[tuple[str, ...], ...]
    n_pinned_features: int
    n_selected_features: int
    graph_replacement_score: float
    graph_completeness_score: float
    subgraph_replacement_score: float
    subgraph_completeness_score: float
    scored_by: str  # "cli" | "viewer"
    created_at: datetime

    @property
    def pinned_ids_json(self) -> str:
        return json.dumps(sorted(self.pinned_ids), separators=(",", ":"))

    @property
    def subgraph_id(self) -> str:
        """The same pinned set on the same score row is one subgraph, however often scored."""
        return stable_id("subgraph", self.score_id, self.pinned_ids_json)

    def row(self) -> dict[str, object]:
        values = asdict(self)
        del values["pinned_ids"], values["supernodes"]
        return {
            "subgraph_id": self.subgraph_id,
            **values,
            "pinned_ids_json": self.pinned_ids_json,
            "supernodes_json": json.dumps([list(group) for group in self.supernodes]),
            "created_at": to_utc_naive(self.created_at),
        }


def graph_of_slug(store: StoreLike, slug: str) -> ScoredGraphRow:
    """The newest successful score row exported under ``slug``; ``StorageError`` naming the slug
    when the store holds none."""
    try:
        with reading(store) as con:
            row = con.execute(
                """
                SELECT score_id, slug, graph_path, attribution_threads, replacement_score,
                       completeness_score
                FROM scores_wide
                WHERE slug = ? AND status = 'ok' AND graph_path IS NOT NULL
                ORDER BY created_at DESC, flow_run_id DESC
                LIMIT 1
                """,
                [slug],
            ).fetchone()
    except NoHistoryError:
        row = None
    if row is None:
        raise StorageError(f"no graph {slug!r} in the score store (the viewer's index lists them)")
    return ScoredGraphRow(*row)


def graph_folder(recorded_path: str, artifacts_dir: Path) -> Path:
    """The folder of a recorded ``graph_path``: the same ``attribute/<key>/`` under this
    machine's artifact store when it is there (a home moved or copied keeps its graphs), else
    the path as recorded."""
    recorded = Path(recorded_path).parent
    here = artifacts_dir / recorded.parent.name / recorded.name
    return here if here.is_dir() else recorded


def record_subgraph(store: StoreLike, record: SubgraphRecord) -> bool:
    """Add ``record`` to ``subgraphs`` in one transaction; False (nothing written) when the same
    pinned set of the same score row is recorded already."""
    store = parse_store(store)
    row = record.row()

    def write(con: duckdb.DuckDBPyConnection) -> bool:
        found = con.execute(
            "SELECT count(*) FROM subgraphs WHERE subgraph_id = ?", [row["subgraph_id"]]
        ).fetchone()
        if found and found[0]:
            return False
        columns = list(row)
        con.execute(
            f"INSERT INTO subgraphs ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' for _ in columns)})",
            [row[column] for column in columns],
        )
        return True

    return write_store(
        store, write, WRITE_TIMEOUT_S, f"recording the subgraph of graph {record.slug}"
    )


def subgraph_rows(
    store: StoreLike,
    slugs: Sequence[str] | None = None,
    transcoder: str | None = None,
    as_of: AsOf | None = None,
) -> list[dict[str, Any]]:
    """Every recorded subgraph, newest first, beside its graph's score row (``subgraphs_wide``):
    only those of ``slugs`` and of ``transcoder`` (its source) when given."""
    try:
        with reading(store, as_of=as_of) as con:
            return _dicts(
                con,
                """
                SELECT * FROM subgraphs_wide
                WHERE ($slugs IS NULL OR list_contains($slugs, slug))
                  AND ($transcoder IS NULL OR transcoder_source = $transcoder)
                ORDER BY created_at DESC, subgraph_id
                """,
                {"slugs": list(slugs) if slugs is not None else None, "transcoder": transcoder},
            )
    except NoHistoryError:
        return []
