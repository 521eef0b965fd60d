"""The binary feature pack circuit-tracer's frontend reads: ``index.json.gz``, a ``.bin`` per layer.

The layout is the one ``init-feature-examples.js`` reads from a Hub repo's ``features/`` folder
(``loadFeatureFromBinary``), so a pack's files can also be uploaded there as they are:

- ``index.json.gz``: gzip of a JSON list, one entry per layer, ``{"filename": "layer_<l>.bin",
  "offsets": [...]}`` with ``d_transcoder + 1`` offsets; feature ``i`` of layer ``l`` is the
  bytes ``offsets[i]`` up to ``offsets[i + 1]`` of that layer's file;
- each record: a 4-byte little-endian length ``n``, then ``n`` bytes of zlib-deflated JSON.

The frontend asks for ``Range: bytes=offsets[i]-offsets[i+1]`` (one byte past the record: the
length prefix makes that harmless). A feature without a record has ``offsets[i] ==
offsets[i + 1]``. ``summary.json.gz`` (ours; the frontend never reads it) lists every record's
layer, index, density, act_max and top logits for the transcoder's feature page.
The feature id the graph page uses is ``cantor_pair(layer, index)``.

**Published, a pack is a folder of immutable versions** (``publish_pack``), so that any number of
runs may grow it while viewers read it::

    features/<pack>/CURRENT            the current version's name, replaced atomically (rename)
    features/<pack>/v-<sha16>/         one version: the files above + ``_SUCCESS``; never edited

A version is written aside and renamed in whole, then ``CURRENT`` is swapped to name it; the
version it replaced stays (a reader that resolved it a moment ago reads it whole), older ones are
removed. A reader resolves ``CURRENT`` once (``current_pack_dir``) and reads every file of that
version, so it never mixes an old index with a new layer file (that mix was a ``zlib.error``).
The folder is self-contained: copying ``features/<pack>/`` copies the pack. A folder from before
versions (the files directly in it, no ``CURRENT``) is still read as its one version.
"""

from __future__ import annotations

import gzip
import itertools
import json
import re
import shutil
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tracerflow.fsutil import (
    atomic_directory,
    file_hashes,
    verify_directory,
    write_text_atomically,
)
from tracerflow.hashing import sha256_json

INDEX_FILE = "index.json.gz"
SUMMARY_FILE = "summary.json.gz"
CURRENT_FILE = "CURRENT"
VERSION_NAME = re.compile(r"v-[0-9a-f]{16}")
LENGTH_PREFIX = struct.Struct("<I")
# The ``feature_type`` circuit-tracer gives feature nodes in graph files (CLTs and PLTs alike).
TRANSCODER_NODE_TYPE = "cross layer transcoder"


def cantor_pair(layer: int, index: int) -> int:
    """The feature id of the graph files (``circuit_tracer.frontend.graph_models``)."""
    return (layer + index) * (layer + index + 1) // 2 + index


def cantor_unpair(feature_id: int) -> tuple[int, int]:
    """``(layer, index)`` of a feature id, as ``util.cantorUnpair`` computes it."""
    w = int(((8 * feature_id + 1) ** 0.5 - 1) // 2)
    while (w + 1) * (w + 2) // 2 <= feature_id:  # guard the float square root
        w += 1
    while w * (w + 1) // 2 > feature_id:
        w -= 1
    index = feature_id - w * (w + 1) // 2
    return w - index, index


def layer_file_name(layer: int) -> str:
    return f"layer_{layer}.bin"


def encode_record(record: Mapping[str, Any]) -> bytes:
    """One record as the frontend decodes it: length prefix + deflated strict JSON."""
    text = json.dumps(record, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    body = zlib.compress(text.encode("utf-8"), 6)
    return LENGTH_PREFIX.pack(len(body)) + body


def decode_record(data: bytes) -> dict[str, Any]:
    """A record from bytes starting at its offset (extra bytes after it are ignored)."""
    (length,) = LENGTH_PREFIX.unpack_from(data)
    return json.loads(zlib.decompress(data[4 : 4 + length]))


def write_feature_pack(
    pack_dir: Path,
    records: Mapping[tuple[int, int], Mapping[str, Any]],
    n_layers: int,
    d_transcoder: int,
) -> Path:
    """Write ``records`` (``{(layer, index): record}``) as a pack into ``pack_dir`` (created).

    Every layer gets a file and an index entry, so the frontend finds an entry for any feature.
    Returns ``pack_dir``.
    """
    pack_dir.mkdir(parents=True, exist_ok=True)
    index = []
    summary = []
    for layer in range(n_layers):
        offsets = [0]
        with (pack_dir / layer_file_name(layer)).open("wb") as layer_file:
            for feature in range(d_transcoder):
                record = records.get((layer, feature))
                if record is not None:
                    offsets.append(offsets[-1] + layer_file.write(encode_record(record)))
                    summary.append(_summary_row(layer, feature, record))
                else:
                    offsets.append(offsets[-1])
        index.append({"filename": layer_file_name(layer), "offsets": offsets})
    _write_gzip_json(pack_dir / INDEX_FILE, index)
    _write_gzip_json(pack_dir / SUMMARY_FILE, summary)
    return pack_dir


def read_feature_pack(pack_dir: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """Every record of a pack, ``{(layer, index): record}`` (to merge in new features).
    ``pack_dir``: a pack's files, or a published pack (its current version is read)."""
    pack_dir = _files_of(pack_dir)
    index = json.loads(gzip.decompress((pack_dir / INDEX_FILE).read_bytes()))
    records = {}
    for layer, entry in enumerate(index):
        data = (pack_dir / entry["filename"]).read_bytes()
        offsets = entry["offsets"]
        for feature, (start, end) in enumerate(itertools.pairwise(offsets)):
            if end > start:
                records[(layer, feature)] = decode_record(data[start:end])
    return records


def pack_features(pack_dir: Path) -> set[tuple[int, int]]:
    """The ``(layer, index)`` pairs a pack has records for, from its index alone (cheap: what a
    re-run reads to compute only the features still missing)."""
    index = json.loads(gzip.decompress((_files_of(pack_dir) / INDEX_FILE).read_bytes()))
    return {
        (layer, feature)
        for layer, entry in enumerate(index)
        for feature, (start, end) in enumerate(itertools.pairwise(entry["offsets"]))
        if end > start
    }


def graph_file_features(graph_json: Path) -> set[tuple[int, int]]:
    """The ``(layer, index)`` of every transcoder feature node of an exported graph file: the
    features the viewer can show for it (node ``feature`` is ``cantor_pair(layer, index)``)."""
    nodes = json.loads(graph_json.read_text(encoding="utf-8"))["nodes"]
    return {
        cantor_unpair(int(node["feature"]))
        for node in nodes
        if node.get("feature_type") == TRANSCODER_NODE_TYPE
    }


def read_pack_summary(pack_dir: Path) -> list[dict[str, Any]]:
    """The pack's ``summary.json.gz`` rows (layer, index, feature_id, density, act_max, logits)."""
    return json.loads(gzip.decompress((_files_of(pack_dir) / SUMMARY_FILE).read_bytes()))


def _summary_row(layer: int, index: int, record: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "layer": layer,
        "index": index,
        "feature_id": cantor_pair(layer, index),
        "density": record["activation_frequency"],
        "act_max": record["act_max"],
        "top_logits": list(record["top_logits"][:5]),
    }


def _write_gzip_json(path: Path, value: Any) -> None:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # mtime=0: the same records give the same bytes (content-addressed store, reproducible).
    path.write_bytes(gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0))


def pack_file_names(pack_dir: Path) -> list[str]:
    """The files of a pack, in the order a reader needs them last: layer files, summary, index."""
    layers = sorted(path.name for path in pack_dir.glob("layer_*.bin"))
    return [*layers, SUMMARY_FILE, INDEX_FILE]


def pack_version(pack_dir: Path) -> str:
    """The version name of a pack's files: ``v-`` and 16 hex digits of the sha256 of their
    sha256s, so the same pack gives the same name on every host."""
    hashes = file_hashes(pack_dir)
    return "v-" + sha256_json({name: hashes[name] for name in pack_file_names(pack_dir)})[:16]


def current_version(published: Path) -> str | None:
    """The version ``published/CURRENT`` names, or None (none yet, or not a version name)."""
    try:
        name = (published / CURRENT_FILE).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return name if VERSION_NAME.fullmatch(name) else None


def current_pack_dir(published: Path) -> Path | None:
    """The folder holding the files of the pack published at ``published``: its current version,
    or ``published`` itself for a pack written before versions; None when there is no index."""
    version = current_version(published)
    folder = published / version if version else published
    return folder if (folder / INDEX_FILE).is_file() else None


def _files_of(pack_dir: Path) -> Path:
    """Where a pack's files are: its current version's folder for a published pack (resolved
    once, so every file read after comes from one version), else ``pack_dir`` itself."""
    version = current_version(pack_dir)
    return pack_dir / version if version else pack_dir


def publish_pack(pack_dir: Path, published: Path) -> Path:
    """Make ``pack_dir``'s files the current version of the pack folder ``published``; returns
    the version's folder.

    The version is written aside and renamed in whole (kept when it is already there intact,
    rewritten when damaged), then ``CURRENT`` is replaced by a rename; the version it named
    stays for readers that resolved it, older ones are removed. Writers of one pack must not
    run at once (the dashboards stage holds a lock beside the packs); readers need no lock.
    """
    published.mkdir(parents=True, exist_ok=True)
    version = pack_version(pack_dir)
    target = published / version
    if verify_directory(target) is not None:  # absent, cut short or edited
        with atomic_directory(target, overwrite=True) as tmp_dir:
            for name in pack_file_names(pack_dir):
                shutil.copyfile(pack_dir / name, tmp_dir / name)
    previous = current_version(published)
    if previous != version:
        write_text_atomically(published / CURRENT_FILE, version + "\n")
    _remove_old_versions(published, keep={version, previous})
    return target


def _remove_old_versions(published: Path, keep: set[str | None]) -> None:
    """Remove the versions of ``published`` not in ``keep``."""
    for entry in published.iterdir():
        old = VERSION_NAME.fullmatch(entry.name) and entry.name not in keep
        if old and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
