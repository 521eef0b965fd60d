"""Published packs are immutable versions swapped in by a rename: a reader that resolved one
version reads all of it whole while a writer swaps in a grown pack (issue 27: a reader mixing an
old index with a new layer file died with ``zlib.error: ... incomplete or truncated stream``)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tracerflow.dashboards.pack import (
    CURRENT_FILE,
    INDEX_FILE,
    current_pack_dir,
    decode_record,
    pack_version,
    publish_pack,
    read_feature_pack,
    write_feature_pack,
)
from tracerflow.fsutil import verify_directory


def record(layer: int, index: int, text: str) -> dict:
    """A record whose size depends on ``text``: a grown pack moves every later offset."""
    return {
        "layer": layer,
        "index": index,
        "act_max": 1.0,
        "activation_frequency": 0.1,
        "top_logits": [text],
        "examples_quantiles": [{"examples": [text] * (index + 1)}],
    }


SMALL = {(0, 1): record(0, 1, "a"), (1, 2): record(1, 2, "b")}
GROWN = {**SMALL, (0, 0): record(0, 0, "c" * 50), (1, 0): record(1, 0, "d" * 80)}


def stored(tmp_path: Path, name: str, records: dict) -> Path:
    return write_feature_pack(tmp_path / name, records, n_layers=2, d_transcoder=4)


def read_from(files: Path, index: list[dict]) -> dict[tuple[int, int], dict]:
    """Every record of ``files`` by the offsets of ``index`` (read earlier), as the page does."""
    records = {}
    for layer, entry in enumerate(index):
        data = (files / entry["filename"]).read_bytes()
        offsets = entry["offsets"]
        for feature in range(len(offsets) - 1):
            if offsets[feature + 1] > offsets[feature]:
                records[(layer, feature)] = decode_record(data[offsets[feature] :])
    return records


def test_a_reader_holding_the_old_version_reads_it_whole_while_a_grown_one_is_swapped_in(
    tmp_path: Path,
) -> None:
    published = tmp_path / "features" / "tracerflow-0123456789ab-01234567"
    publish_pack(stored(tmp_path, "small", SMALL), published)
    held = current_pack_dir(published)  # the reader resolves CURRENT once...
    assert held is not None
    old_index = json.loads(gzip.decompress((held / INDEX_FILE).read_bytes()))

    new = publish_pack(stored(tmp_path, "grown", GROWN), published)  # ...a writer swaps

    assert new != held and current_pack_dir(published) == new
    assert read_from(held, old_index) == SMALL  # the old version, whole, under the old index
    assert read_feature_pack(published) == GROWN  # a new reader gets the new one, whole
    # Where the old offsets meet the new layer file they fall mid-record: that mix was the bug.
    assert old_index != json.loads(gzip.decompress((new / INDEX_FILE).read_bytes()))


def test_the_version_before_stays_older_ones_go_and_a_republish_changes_nothing(
    tmp_path: Path,
) -> None:
    published = tmp_path / "pack"
    first = publish_pack(stored(tmp_path, "one", SMALL), published)
    second = publish_pack(stored(tmp_path, "two", GROWN), published)
    assert sorted(p.name for p in published.iterdir()) == sorted(
        [CURRENT_FILE, first.name, second.name]
    )
    third_records = {**GROWN, (1, 3): record(1, 3, "e")}
    third = publish_pack(stored(tmp_path, "three", third_records), published)
    assert sorted(p.name for p in published.iterdir()) == sorted(
        [CURRENT_FILE, second.name, third.name]
    )
    mtime = (third / INDEX_FILE).stat().st_mtime_ns
    assert publish_pack(stored(tmp_path, "again", third_records), published) == third
    assert (third / INDEX_FILE).stat().st_mtime_ns == mtime  # same bytes: nothing rewritten
    assert third.name == pack_version(tmp_path / "three")  # a name every host agrees on
    assert verify_directory(third) is None


def test_a_damaged_current_version_is_rewritten(tmp_path: Path) -> None:
    published = tmp_path / "pack"
    version = publish_pack(stored(tmp_path, "one", SMALL), published)
    (version / "layer_1.bin").write_bytes(b"\0\0")
    assert publish_pack(tmp_path / "one", published) == version
    assert read_feature_pack(published) == SMALL
