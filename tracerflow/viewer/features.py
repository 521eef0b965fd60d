"""The feature packs the viewer serves, and each transcoder's page of features.

Packs live in ``<graph files>/features/<name>/`` (``tracerflow.dashboards.pack``), ``<name>`` the
``scan`` the graph files carry (``tracerflow-<hash12>-<id8>``: weights, model, corpus and
settings), so the graph page finds a graph's feature examples from its metadata alone. A pack
folder holds immutable versions and ``CURRENT`` naming one: the pack list gives each pack's
current version, and the page reads the index and the layer files of that version, so a run
swapping in a grown pack meanwhile never mixes two versions under it. As with graphs, a
request is matched against the few names a pack may hold, never joined to a folder as given:
``<name>.html`` (the feature page), ``<name>[/<version>]/index.json.gz`` and
``<name>[/<version>]/layer_<n>.bin`` (without a version: the current one, or the files of a
pack from before versions); ``<name>`` must be a valid slug, ``<version>`` a version name, and
the file must resolve to where it was looked for (no symlink out of the folder).
"""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tracerflow.dashboards.pack import (
    INDEX_FILE,
    SUMMARY_FILE,
    VERSION_NAME,
    current_pack_dir,
    read_pack_summary,
)
from tracerflow.viewer.index import render_page
from tracerflow.viewer.slugs import is_valid_slug

logger = logging.getLogger(__name__)

FEATURES_DIR = "features"
FEATURE_LIST_PATH = "/features/index.json"
# A transcoder page lists at most this many features (the densest first): an HTML table of
# every feature of a 12 x 16k transcoder would be tens of MB.
MAX_FEATURE_ROWS = 5000
# Runs of the ``\\xNN`` escapes a pack writes for byte-level tokens that are part of a character.
BYTE_ESCAPES = re.compile(r"(?:\\x[0-9a-fA-F]{2})+")
CONTROL_TEXT = {"\n": "⏎", "\t": "→", "\r": "↵", "\x7f": "\u2421"}


def display_token(token: str) -> str:
    """A token as the text it spells, as the graph page shows it (``util.ppToken``).

    A run of ``\\xNN`` escapes that forms whole UTF-8 characters becomes them; one that does not
    (a byte left on its own) shows as ``<0xNN>`` per byte, as byte-fallback tokenizers name
    such tokens; newline, tab and carriage return as ``⏎ → ↵``; other control characters as
    their Unicode pictures (``\\x1b`` as ``␛``).
    """

    def decode(match: re.Match[str]) -> str:
        data = bytes(int(part, 16) for part in match.group(0).split("\\x")[1:])
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<0x{byte:02X}>" for byte in data)

    text = BYTE_ESCAPES.sub(decode, token)
    return "".join(
        CONTROL_TEXT.get(char, chr(0x2400 + ord(char)) if ord(char) < 0x20 else char)
        for char in text
    )


_LAYER_FILE = re.compile(r"layer_[0-9]{1,4}\.bin")


@dataclass(frozen=True)
class FeatureFile:
    """A file of a pack the server may send, and how."""

    pack_name: str
    path: Path
    kind: Literal["page", "index", "layer"]


def features_root(graph_files_dir: Path) -> Path:
    return graph_files_dir / FEATURES_DIR


def feature_pack_names(graph_files_dir: Path) -> list[str]:
    """Names of the complete packs (an ``index.json.gz`` present) under ``features/``, sorted."""
    return sorted(feature_pack_versions(graph_files_dir))


def feature_pack_versions(graph_files_dir: Path) -> dict[str, str]:
    """Each complete pack's current version (``""`` for a pack from before versions), by name:
    what the page reads its files under, ``features/<name>/<version>/``."""
    root = features_root(graph_files_dir)
    if not root.is_dir():
        return {}
    versions = {}
    for entry in root.iterdir():
        if not is_valid_slug(entry.name):
            continue
        files = current_pack_dir(entry)
        if files is not None and _inside(files / INDEX_FILE, files):
            versions[entry.name] = "" if files == entry else files.name
    return versions


def feature_file(graph_files_dir: Path, relative: str) -> FeatureFile | None:
    """The pack file a ``/features/<relative>`` request names, or ``None`` (a 404)."""
    root = features_root(graph_files_dir)
    if "/" not in relative:
        name = relative.removesuffix(".html")
        if relative.endswith(".html") and is_valid_slug(name):
            files = current_pack_dir(root / name)
            if files is not None and _inside(files / SUMMARY_FILE, files):
                return FeatureFile(name, files / SUMMARY_FILE, "page")
        return None
    parts = relative.split("/")
    name, file_name = parts[0], parts[-1]
    if not is_valid_slug(name) or len(parts) > 3:
        return None
    if len(parts) == 3:
        if not VERSION_NAME.fullmatch(parts[1]):
            return None
        files: Path | None = root / name / parts[1]
    else:
        files = current_pack_dir(root / name)
    if files is None:
        return None
    if file_name == INDEX_FILE:
        kind: Literal["index", "layer"] = "index"
    elif _LAYER_FILE.fullmatch(file_name):
        kind = "layer"
    else:
        return None
    path = files / file_name
    return FeatureFile(name, path, kind) if _inside(path, files) else None


def _inside(path: Path, folder: Path) -> bool:
    """``path`` is a file whose real location is directly in ``folder`` (itself no symlink)."""
    try:
        return path.is_file() and path.resolve().parent == folder.resolve() == folder.absolute()
    except OSError:
        return False


def render_feature_page(
    pack_name: str, summary_path: Path, transcoder_names: list[str] | None = None
) -> str:
    """A sortable table of a pack's features: layer, index, density, max activation, logits.

    ``transcoder_names``: what the graphs using the pack call its transcoder (source and
    revision); the page is titled by them, the pack's name (a hash) in a tooltip, or by the
    pack's name alone when there are none.
    """
    rows_data = read_pack_summary(summary_path.parent)  # the version resolved for the request
    rows_data.sort(key=lambda row: (-row["density"], row["layer"], row["index"]))
    shown = rows_data[:MAX_FEATURE_ROWS]
    rows = "\n".join(
        "<tr>"
        f"<td data-sort='{row['layer']}'>{row['layer']}</td>"
        f"<td data-sort='{row['index']}'>{row['index']}</td>"
        f"<td data-sort='{row['feature_id']}'>{row['feature_id']}</td>"
        f"<td class='score' data-sort='{row['density']!r}'>{100 * row['density']:.4f}%</td>"
        f"<td class='score' data-sort='{row['act_max']!r}'>{row['act_max']:.3f}</td>"
        f"<td>{''.join(_token_span(t) for t in row['top_logits'])}"
        "</td>"
        "</tr>"
        for row in shown
    )
    cut = f" Showing the {len(shown)} densest." if len(shown) < len(rows_data) else ""
    headers = "".join(
        f"<th data-type='{kind}' tabindex='0'>{label}</th>"
        for label, kind in (
            ("Layer", "number"),
            ("Index", "number"),
            ("Feature id", "number"),
            ("Density", "number"),
            ("Max activation", "number"),
            ("Top logits", "text"),
        )
    )
    name = html.escape(", ".join(transcoder_names or []) or pack_name)
    body = f"""<p><a href="/">&larr; all graphs</a></p>
<h1>Features of <span class="transcoder" title="scan {html.escape(pack_name)}">{name}</span></h1>
<p class="where">{len(rows_data)} feature(s) with dashboards.{cut} Click a column header to sort
(density: the share of corpus tokens on which the feature is active).</p>
<table id="features" class="sortable">
<thead><tr>{headers}</tr></thead>
<tbody>
{rows}
</tbody>
</table>"""
    return render_page(f"features of {name}", body)


def _token_span(token: str) -> str:
    shown = html.escape(display_token(token))
    return f"<span class=token title='{html.escape(token)}'>{shown}</span>"
