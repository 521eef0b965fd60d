"""The binary feature pack circuit-tracer's frontend reads: ``index.json.gz``, a ``.bin`` per layer.

The layout is the one ``init-feature-examples.js`` reads from a Hub repo's ``features/`` folder
(``loadFeatureFromBinary``), so a pack folder can also be uploaded there as is:

- ``index.json.gz``: gzip of a JSON list, one entry per layer, ``{"filename": "layer_<l>.bin",
  "offsets": [...]}`` with ``d_transcoder + 1`` offsets; feature ``i`` of layer ``l`` is the
  bytes ``offsets[i]`` up to ``offsets[i + 1]`` of that layer's file;
- each record: a 4-byte little-endian length ``n``, then ``n`` bytes of zlib-deflated JSON.

The frontend asks for ``Range: bytes=offsets[i]-offsets[i+1]`` (one byte past the record: the
length prefix makes that harmless). A feature without a record has ``offsets[i] ==
offsets[i + 1]``. ``summary.json.gz`` (ours; the frontend never reads it) lists every record's
layer, index, density, act_max and top logits for the transcoder's feature page.
The feature id the graph page uses is ``cantor_pair(layer, index)``.
"""

from __future__ import annotations

import gzip
import itertools
import json
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

INDEX_FILE = "index.json.gz"
SUMMARY_FILE = "summary.json.gz"
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
    """Every record of a pack, ``{(layer, index): record}`` (to merge in new features)."""
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
    index = json.loads(gzip.decompress((pack_dir / INDEX_FILE).read_bytes()))
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
    return json.loads(gzip.decompress((pack_dir / SUMMARY_FILE).read_bytes()))


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
