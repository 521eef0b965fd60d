"""What a person saved in the viewer survives the next run.

The viewer's Save (``POST /save_graph/<slug>``) stores the view state (``qParams``: pinned
nodes, supernodes, the chosen node, ...) in ``<slug>.view.json`` beside the graph file, then
rewrites the graph file with it. The export stage, which republishes ``<slug>.json`` whenever it
differs from what the run generated, publishes the generated graph *with the saved view state*
(``graph_text``), so a nightly re-run restores a damaged file but never erases a saved view.
Slugs hold no dot, so a view file can never be asked for as a graph.

Strict JSON both ways: no ``NaN`` or ``Infinity``, which a browser's ``JSON.parse`` refuses.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from tracerflow.fsutil import write_text_atomically

VIEW_SUFFIX = ".view.json"
logger = logging.getLogger(__name__)


def view_path(graph_files_dir: Path, slug: str) -> Path:
    """Where the saved view state of graph ``slug`` lives (``slug`` validated by the caller)."""
    return graph_files_dir / f"{slug}{VIEW_SUFFIX}"


def save_view(graph_files_dir: Path, slug: str, q_params: dict[str, Any]) -> None:
    """Keep ``q_params`` as the saved view state of ``slug`` (atomically)."""
    write_text_atomically(view_path(graph_files_dir, slug), strict_json(q_params))


def saved_view(graph_files_dir: Path, slug: str) -> dict[str, Any] | None:
    """The saved view state of ``slug``; None when there is none, or when its file is not a
    strict JSON object (then logged: the generated view is published instead)."""
    path = view_path(graph_files_dir, slug)
    if not path.is_file():
        return None
    try:
        value = strict_loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as error:
        logger.warning("ignoring the saved view %s: %s", path, error)
        return None
    if not isinstance(value, dict):
        logger.warning("ignoring the saved view %s: not a JSON object", path)
        return None
    return value


def graph_text(graph: dict[str, Any], q_params: dict[str, Any]) -> str:
    """The graph file of ``graph`` showing the view state ``q_params``, as Save writes it."""
    return strict_json({**graph, "qParams": q_params})


def strict_json(value: Any) -> str:
    """Compact JSON a browser's ``JSON.parse`` reads: no NaN or Infinity, no indentation."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def strict_loads(text: bytes | str) -> Any:
    """JSON as RFC 8259 has it: ``NaN``, ``Infinity`` and ``-Infinity`` raise ValueError, and
    so does a number too large for a float (``1e999``), which Python would read as infinity."""
    value = json.loads(text, parse_constant=refuse_constant)
    check_depth_and_numbers(value, max_depth=None)
    return value


def refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def check_depth_and_numbers(value: Any, max_depth: int | None) -> None:
    """Raise ValueError for a non-finite float or, with ``max_depth``, deeper nesting.

    Iterative, so a deep value cannot exhaust the interpreter's stack here.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            raise ValueError("a number too large for JSON")
        if isinstance(item, dict | list):
            if max_depth is not None and depth > max_depth:
                raise ValueError(f"nested more than {max_depth} levels deep")
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
