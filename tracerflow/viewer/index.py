"""The list of graphs the viewer offers, and the index page that shows it.

Graphs come from the graph-files folder (``graph-metadata.json`` names them, ``<slug>.json``
holds each); scores, model and run date come from the score database when there is one, and so
does the table of each transcoder's newest quality metrics above the graphs.
``load_db_scores`` is the one place that talks to storage; without a database, or with one
that cannot be read right now (held by a writer for longer than storage waits, newer schema,
not a database), the index still lists every graph, with blank scores.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tracerflow.cells import cell_text
from tracerflow.storage.quality import latest_metrics
from tracerflow.storage.queries import graph_index
from tracerflow.storage.store import NoHistoryError, StoreLike
from tracerflow.storage.subgraphs import subgraph_rows
from tracerflow.viewer.graph_ids import GRAPH_METADATA_FILE
from tracerflow.viewer.slugs import is_valid_slug

logger = logging.getLogger(__name__)

SCORE_KEYS = (
    "replacement_score",
    "completeness_score",
    "pruned_replacement_score",
    "pruned_completeness_score",
)

# The index's name for each column of ``graph_index``'s rows (scores keep their names).
DB_COLUMNS = {
    "transcoder": "transcoder_source",
    "transcoder_revision": "transcoder_revision",
    "transcoder_commit": "transcoder_commit_sha",
    "transcoder_hash": "transcoder_content_hash",
    "model": "model_name",
    "prompt": "prompt",
    "recorded_at": "recorded_at",
    **{key: key for key in SCORE_KEYS},
}

# circuit-tracer prepends a special token to every prompt it attributes and writes the decoded
# tokens, that one included, as the metadata ``prompt`` ("<|endoftext|>The cat sat"). The index
# has no tokenizer to ask which token it was, so it strips the BOS strings of the tokenizer
# families circuit-tracer supports; a prompt that really starts with one loses it on the index
# only (the graph file keeps it).
KNOWN_BOS_TOKENS = ("<|endoftext|>", "<|begin_of_text|>", "<bos>", "<s>")


@dataclass(frozen=True)
class GraphEntry:
    """One row of the index: a graph file and, when the database has them, its scores."""

    slug: str
    prompt: str
    scan: str | None = None
    transcoder: str | None = None  # its source, as the user named it ("toy-clt", "./my-clt")
    transcoder_revision: str | None = None  # the ref asked for ("main"), if any
    transcoder_commit: str | None = None  # the Hub commit it resolved to, if any
    transcoder_hash: str | None = None  # sha256 of the converted weights
    model: str | None = None
    replacement_score: float | None = None
    completeness_score: float | None = None
    pruned_replacement_score: float | None = None
    pruned_completeness_score: float | None = None
    recorded_at: dt.datetime | None = None
    # The newest saved subgraph of this graph (docs/metrics.md, "Subgraph scores"), if any.
    subgraph_replacement_score: float | None = None
    subgraph_completeness_score: float | None = None
    subgraph_n_pinned_features: int | None = None
    subgraph_scored_at: dt.datetime | None = None


def read_graph_metadata(graph_files_dir: Path) -> list[dict[str, Any]]:
    """The ``graph-metadata.json`` entries the viewer may show, in file order.

    An entry is kept only if its slug is valid and its ``<slug>.json`` exists, so the viewer
    page never asks for a file the server would refuse. A missing or unreadable metadata file
    means no graphs.
    """
    metadata_path = graph_files_dir / GRAPH_METADATA_FILE
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return []
    except (OSError, ValueError) as exc:
        logger.warning("cannot read %s: %s", metadata_path, exc)
        return []
    graphs = metadata.get("graphs") if isinstance(metadata, dict) else None
    if not isinstance(graphs, list):
        return []
    return [
        entry
        for entry in graphs
        if isinstance(entry, dict)
        and is_valid_slug(entry.get("slug"))
        and (graph_files_dir / f"{entry['slug']}.json").is_file()
    ]


def load_db_scores(store: StoreLike | None) -> dict[str, dict[str, Any]]:
    """Per slug, the index's fields (``DB_COLUMNS``) from storage's ``graph_index``.

    The adapter between the viewer and the score database: nothing else in the viewer imports
    storage. ``graph_index`` gives one row per slug, its newest score. ``{}`` when there is no
    database or it cannot be read.
    """
    if store is None:
        return {}
    try:
        rows = graph_index(store)
    except NoHistoryError:
        return {}
    except Exception as exc:  # a locked or unreadable database must not take the viewer down
        logger.warning("cannot read scores from %s: %s", store, exc)
        return {}
    return {
        row["slug"]: {key: row.get(column) for key, column in DB_COLUMNS.items()}
        for row in rows
        if is_valid_slug(row.get("slug"))
    }


def load_db_subgraphs(store: StoreLike | None) -> dict[str, dict[str, Any]]:
    """Per slug, its newest saved subgraph's row (``subgraphs_wide``); ``{}`` when there is no
    database or it cannot be read (the same rules as ``load_db_scores``)."""
    if store is None:
        return {}
    try:
        rows = subgraph_rows(store)  # newest first
    except Exception as exc:  # a locked or unreadable database must not take the viewer down
        logger.warning("cannot read subgraphs from %s: %s", store, exc)
        return {}
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        newest.setdefault(row["slug"], row)
    return newest


# The transcoder quality table: (label, row key, sort type), all layers (docs/metrics.md).
QUALITY_COLUMNS = (
    ("Transcoder", "transcoder_source", "text"),
    ("Model", "model_name", "text"),
    ("Evaluation corpus", "corpus_name", "text"),
    ("Tokens", "corpus_n_tokens", "number"),
    ("FVU", "fvu", "number"),
    ("L0", "l0", "number"),
    ("Dead", "dead_share", "number"),
    ("KL", "kl", "number"),
    ("Top-1", "top1_agreement", "number"),
    ("CE recovered", "ce_loss_recovered", "number"),
)


def load_db_metrics(store: StoreLike | None) -> list[dict[str, Any]]:
    """Each transcoder's newest all-layers metrics; ``[]`` when there is no database, it cannot
    be read right now, or it holds none (the same rules as ``load_db_scores``)."""
    if store is None:
        return []
    try:
        return latest_metrics(store)
    except NoHistoryError:
        return []
    except Exception as exc:  # a locked or unreadable database must not take the viewer down
        logger.warning("cannot read transcoder metrics from %s: %s", store, exc)
        return []


def strip_bos(prompt: str) -> str:
    """``prompt`` without a leading BOS token string (``KNOWN_BOS_TOKENS``), if it has one."""
    for bos in KNOWN_BOS_TOKENS:
        if prompt.startswith(bos):
            return prompt[len(bos) :]
    return prompt


def build_graph_index(graph_files_dir: Path, store: StoreLike | None = None) -> list[GraphEntry]:
    """Every viewable graph, newest first, with database scores merged in by slug.

    Without a database row, the prompt is the metadata's without its BOS token, the transcoder
    is the graph's ``scan``, the model and run date come from the metadata entry's optional
    ``model`` / ``recorded_at`` keys, and the run date falls back to the graph file's
    modification time.
    """
    scores = load_db_scores(store)
    subgraphs = load_db_subgraphs(store) if scores else {}
    entries = []
    for meta in read_graph_metadata(graph_files_dir):
        slug = meta["slug"]
        row = scores.get(slug, {})
        subgraph = subgraphs.get(slug, {})
        recorded_at = _as_datetime(row.get("recorded_at")) or _as_datetime(meta.get("recorded_at"))
        if recorded_at is None:
            mtime = (graph_files_dir / f"{slug}.json").stat().st_mtime
            recorded_at = dt.datetime.fromtimestamp(mtime, tz=dt.UTC)
        entries.append(
            GraphEntry(
                slug=slug,
                prompt=str(row.get("prompt") or strip_bos(str(meta.get("prompt") or ""))),
                scan=_as_text(meta.get("scan")),
                transcoder=_as_text(
                    row.get("transcoder") or meta.get("transcoder") or meta.get("scan")
                ),
                transcoder_revision=_as_text(
                    row.get("transcoder_revision") or meta.get("transcoder_revision")
                ),
                transcoder_commit=_as_text(
                    row.get("transcoder_commit") or meta.get("transcoder_commit")
                ),
                transcoder_hash=_as_text(row.get("transcoder_hash") or meta.get("transcoder_hash")),
                model=_as_text(row.get("model") or meta.get("model")),
                recorded_at=recorded_at,
                **{key: _as_float(row.get(key, meta.get(key))) for key in SCORE_KEYS},
                subgraph_replacement_score=_as_float(subgraph.get("subgraph_replacement_score")),
                subgraph_completeness_score=_as_float(subgraph.get("subgraph_completeness_score")),
                subgraph_n_pinned_features=subgraph.get("n_pinned_features"),
                subgraph_scored_at=_as_datetime(subgraph.get("created_at")),
            )
        )
    entries.sort(key=lambda e: _sort_time(e.recorded_at), reverse=True)
    return entries


def viewer_metadata(
    graph_files_dir: Path, store: StoreLike | None = None
) -> dict[str, list[dict[str, Any]]]:
    """What the viewer page reads as ``data/graph-metadata.json``: only the viewable graphs,
    each with its four scores (``SCORE_KEYS``, ``null`` when unknown) for the graph page."""
    graphs = read_graph_metadata(graph_files_dir)
    scores = {entry.slug: entry for entry in build_graph_index(graph_files_dir, store)}
    for graph in graphs:
        entry = scores.get(graph["slug"])
        for key in SCORE_KEYS:
            graph[key] = getattr(entry, key) if entry else None
        # What the page names the graph by: the transcoder's source and revision; the weights'
        # hash goes in a tooltip (two sources with the same weights must not look alike).
        graph["transcoder_label"] = transcoder_label(entry) if entry else graph.get("scan")
        graph["transcoder_title"] = transcoder_title(entry) if entry else graph.get("scan")
        graph["model"] = entry.model if entry else graph.get("model")
    return {"graphs": graphs}


def transcoder_label(entry: GraphEntry) -> str:
    """The transcoder as a person named it: its source, and the revision asked for if any
    (``"org/clt @ main"``); the scan name (a hash) only when nothing better is known."""
    label = entry.transcoder or entry.scan or ""
    if entry.transcoder_revision:
        label += f" @ {entry.transcoder_revision}"
    elif entry.transcoder_commit:
        label += f" @ {entry.transcoder_commit[:12]}"
    return label


def transcoder_names_by_scan(entries: Iterable[GraphEntry]) -> dict[str, list[str]]:
    """Per scan (the name graph and feature files use, a hash), what the graphs using it call
    their transcoder (``transcoder_label``), each once, in ``entries``' order."""
    names: dict[str, list[str]] = {}
    for entry in entries:
        label = transcoder_label(entry)
        if entry.scan and label and label not in names.setdefault(entry.scan, []):
            names[entry.scan].append(label)
    return names


def transcoder_title(entry: GraphEntry) -> str:
    """The tooltip of ``transcoder_label``: the resolved commit, the weights' sha256 and the
    scan name the graph and feature files use."""
    lines = []
    if entry.transcoder_commit:
        lines.append(f"commit {entry.transcoder_commit}")
    if entry.transcoder_hash:
        lines.append(f"weights sha256 {entry.transcoder_hash}")
    if entry.scan:
        lines.append(f"scan {entry.scan}")
    return "\n".join(lines)


def render_index_html(
    entries: Iterable[GraphEntry],
    graph_files_dir: Path,
    feature_packs: Iterable[str] = (),
    quality: Iterable[dict[str, Any]] = (),
) -> str:
    """The index page: a sortable table of graphs, each row linking to the viewer, a link to
    the feature page of each transcoder with dashboards (``feature_packs``: their names), and
    the transcoders' quality metrics (``quality``: ``load_db_metrics`` rows)."""
    entries = list(entries)
    packs = sorted(feature_packs)
    rows = "\n".join(_render_row(entry, entry.scan in packs) for entry in entries)
    empty = (
        ""
        if entries
        else f"<p class='empty'>No graphs yet in <code>{html.escape(str(graph_files_dir))}</code>."
        " Export some (e.g. <code>tracerflow demo</code>) and reload.</p>"
    )
    headers = "".join(
        f"<th data-type='{kind}' tabindex='0'>{html.escape(label)}</th>" for label, kind in _COLUMNS
    )
    body = f"""<h1>Attribution graphs</h1>
<p class="where">{len(entries)} graph(s) in <code>{html.escape(str(graph_files_dir))}</code>.
Click a column header to sort.</p>
{empty}
{_render_pack_list(packs, entries)}
{_render_quality(list(quality))}
<table id="graphs" class="sortable">
<thead><tr>{headers}</tr></thead>
<tbody>
{rows}
</tbody>
</table>"""
    return render_page("tracerflow graphs", body)


def render_page(title: str, body: str) -> str:
    """A page of the index's look: its stylesheet, ``body``, and the table-sorting script
    (which sorts every ``table.sortable``). ``title`` must be escaped already."""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="/tracerflow-index.css">
</head>
<body>
{body}
<script src="/tracerflow-index.js"></script>
</body>
</html>
"""


_COLUMNS = (
    ("Prompt", "text"),
    ("Transcoder", "text"),
    ("Model", "text"),
    ("Replacement", "number"),
    ("Completeness", "number"),
    ("Replacement (pruned)", "number"),
    ("Completeness (pruned)", "number"),
    ("Run date", "text"),
    ("Replacement (subgraph)", "number"),
    ("Completeness (subgraph)", "number"),
)


def _render_pack_list(packs: list[str], entries: list[GraphEntry]) -> str:
    """A link to each pack's feature page, named by the sources of the graphs that use it (the
    pack's name, a hash, in the tooltip; it alone when no graph names a source)."""
    if not packs:
        return ""
    names = transcoder_names_by_scan(entries)
    links = "".join(
        f"<li><a href='/features/{name}.html' title='scan {name}'>"
        f"{html.escape(', '.join(names.get(name, [])) or name)}</a></li>"
        for name in packs
    )  # pack names are valid slugs: nothing to escape
    return f"<h2>Feature dashboards</h2>\n<ul class='feature-packs'>{links}</ul>"


def _render_quality(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    headers = "".join(
        f"<th data-type='{kind}' tabindex='0'>{html.escape(label)}</th>"
        for label, _, kind in QUALITY_COLUMNS
    )
    body = "\n".join(
        "<tr>"
        + "".join(
            _score_cell(_as_float(row.get(key)))
            if kind == "number" and key != "corpus_n_tokens"
            else _text_cell(_as_text(row.get(key)))
            for _, key, kind in QUALITY_COLUMNS
        )
        + "</tr>"
        for row in rows
    )
    return (
        "<h2>Transcoder quality (newest, all layers)</h2>\n"
        f"<table id='quality' class='sortable'>\n<thead><tr>{headers}</tr></thead>\n"
        f"<tbody>\n{body}\n</tbody>\n</table>\n<h2>Graphs</h2>"
    )


def _render_row(entry: GraphEntry, has_features: bool = False) -> str:
    link = f"/graph.html?slug={entry.slug}"  # the slug is validated: no escaping needed in URLs
    recorded = entry.recorded_at.strftime("%Y-%m-%d %H:%M") if entry.recorded_at else ""
    sort_time = entry.recorded_at.isoformat() if entry.recorded_at else ""
    cells = [
        f"<td data-sort='{html.escape(entry.prompt)}'><a href='{link}'>"
        f"{html.escape(entry.prompt) or html.escape(entry.slug)}</a>"
        f"<div class='slug'>{entry.slug}</div></td>",
        _transcoder_cell(entry, has_features),
        _text_cell(entry.model),
        *(_score_cell(getattr(entry, key)) for key in SCORE_KEYS),
        f"<td data-sort='{sort_time}'>{recorded}</td>",
        *_subgraph_cells(entry),
    ]
    return f"<tr data-slug='{entry.slug}'>{''.join(cells)}</tr>"


def _subgraph_cells(entry: GraphEntry) -> list[str]:
    """The newest saved subgraph's replacement and completeness, how many features it pins and
    when it was scored in the tooltip."""
    cells = [
        _score_cell(entry.subgraph_replacement_score),
        _score_cell(entry.subgraph_completeness_score),
    ]
    if entry.subgraph_scored_at is None:
        return cells
    when = entry.subgraph_scored_at.strftime("%Y-%m-%d %H:%M")
    title = f"{entry.subgraph_n_pinned_features} pinned feature(s), scored {when} UTC"
    return [cell.replace("<td ", f"<td title='{title}' ", 1) for cell in cells]


def _transcoder_cell(entry: GraphEntry, has_features: bool) -> str:
    """Source and revision, the hash in the tooltip; a link to its features when it has some."""
    text = html.escape(transcoder_label(entry))
    title = html.escape(transcoder_title(entry))
    features = (
        f"<div class='slug'><a href='/features/{entry.scan}.html'>features</a></div>"
        if has_features
        else ""
    )
    name = f"<span class='transcoder' title='{title}'>{text}</span>"
    return f"<td data-sort='{text}'>{name}{features}</td>"


def _text_cell(value: str | None) -> str:
    text = html.escape(value or "")
    return f"<td data-sort='{text}'>{text}</td>"


def _score_cell(value: float | None) -> str:
    if value is None:
        return "<td class='score' data-sort=''>&ndash;</td>"
    return f"<td class='score' data-sort='{value!r}'>{cell_text(value)}</td>"


def _as_text(value: Any) -> str | None:
    return None if value is None else str(value)


def _as_float(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _as_datetime(value: Any) -> dt.datetime | None:
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    if isinstance(value, str):
        try:
            return _as_datetime(dt.datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def _sort_time(value: Any) -> float:
    parsed = _as_datetime(value)
    return parsed.timestamp() if parsed else float("-inf")
