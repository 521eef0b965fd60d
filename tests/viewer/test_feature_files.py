"""Feature packs served by the real viewer server on 127.0.0.1: Range requests as the frontend
makes them, refusals, the transcoder's feature page and the links to it."""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from circuit_tracer.frontend.graph_models import _cantor_pairing

from tests.viewer.conftest import serve_in_thread
from tracerflow.dashboards.pack import (
    cantor_pair,
    current_pack_dir,
    encode_record,
    publish_pack,
    write_feature_pack,
)
from tracerflow.viewer.features import display_token
from tracerflow.viewer.server import ViewerServer

PACK = "tracerflow-0123456789ab-01234567"
SLUG = "toy-graph"


def record(layer: int, index: int, density: float) -> dict:
    return {
        "transcoder_id": PACK,
        "layer": layer,
        "index": index,
        "examples_quantiles": [
            {
                "quantile_name": "Top activations",
                "examples": [
                    {
                        "tokens": [" Mary", " gave", " a"],
                        "tokens_acts_list": [0.0, 2.5, 0.5],
                        "train_token_ind": 1,
                        "is_repeated_datapoint": False,
                    }
                ],
            }
        ],
        "top_logits": [" John", " Mary"],
        "bottom_logits": [" the"],
        "act_min": 0.5,
        "act_max": 2.5,
        "quantile_values": [2.5] * 100,
        "histogram": [1.0, 0.0, 1.0],
        "activation_frequency": density,
    }


RECORDS = {(0, 2): record(0, 2, 0.01), (1, 0): record(1, 0, 0.2), (1, 3): record(1, 3, 0.05)}
# The graph files' feature id of each record, worked by hand from the Cantor pairing of
# (layer, index), (l + i)(l + i + 1) / 2 + i: (0, 2) -> 3 + 2, (1, 0) -> 1 + 0, (1, 3) -> 10 + 3.
FEATURE_IDS = {(0, 2): 5, (1, 0): 1, (1, 3): 13}


@pytest.fixture
def graph_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "graph-files"
    write_feature_pack(tmp_path / "stored", RECORDS, n_layers=2, d_transcoder=4)
    publish_pack(tmp_path / "stored", folder / "features" / PACK)
    (folder / f"{SLUG}.json").write_text("{}")
    metadata = {"graphs": [{"slug": SLUG, "scan": PACK, "prompt": "Mary gave a"}]}
    (folder / "graph-metadata.json").write_text(json.dumps(metadata))
    return folder


@pytest.fixture
def server(graph_dir: Path) -> Iterator[ViewerServer]:
    with serve_in_thread(graph_dir) as running:
        yield running


def get(
    server: ViewerServer, path: str, headers: dict[str, str] | None = None
) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=10)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.body = response.read()  # type: ignore[attr-defined]
    connection.close()
    return response


def files_of(graph_dir: Path) -> Path:
    files = current_pack_dir(graph_dir / "features" / PACK)
    assert files is not None and files.parent.name == PACK
    return files


def test_lists_the_packs_and_serves_the_index_as_stored(
    server: ViewerServer, graph_dir: Path
) -> None:
    version = files_of(graph_dir).name
    listing = get(server, "/features/index.json")
    assert json.loads(listing.body) == {"scans": [PACK], "versions": {PACK: version}}  # type: ignore[attr-defined]
    stored = (files_of(graph_dir) / "index.json.gz").read_bytes()
    for path in (f"/features/{PACK}/{version}/index.json.gz", f"/features/{PACK}/index.json.gz"):
        index = get(server, path, {"Accept-Encoding": "gzip"})
        assert index.status == 200
        assert index.getheader("Content-Encoding") is None  # pako inflates it, not the browser
        assert index.body == stored  # type: ignore[attr-defined]


def test_a_pack_from_before_versions_is_still_served(server: ViewerServer, graph_dir: Path):
    """Its files directly in ``features/<name>/``, no ``CURRENT``: listed with no version."""
    old = "tracerflow-ba9876543210"
    write_feature_pack(graph_dir / "features" / old, RECORDS, n_layers=2, d_transcoder=4)
    listing = json.loads(get(server, "/features/index.json").body)  # type: ignore[attr-defined]
    assert listing["scans"] == sorted([PACK, old]) and listing["versions"][old] == ""
    stored = (graph_dir / "features" / old / "layer_1.bin").read_bytes()
    assert get(server, f"/features/{old}/layer_1.bin").body == stored  # type: ignore[attr-defined]


def test_a_range_request_as_the_frontend_makes_it_returns_the_record(server: ViewerServer) -> None:
    index = json.loads(gzip.decompress(get(server, f"/features/{PACK}/index.json.gz").body))  # type: ignore[attr-defined]
    for (layer, feature), expected in RECORDS.items():
        entry = index[layer]
        start, end = entry["offsets"][feature], entry["offsets"][feature + 1]
        response = get(
            server, f"/features/{PACK}/{entry['filename']}", {"Range": f"bytes={start}-{end}"}
        )
        size = entry["offsets"][-1]
        last = min(end, size - 1)
        assert response.status == 206
        assert response.getheader("Content-Range") == f"bytes {start}-{last}/{size}"
        assert response.getheader("Accept-Ranges") == "bytes"
        body = response.body  # type: ignore[attr-defined]
        assert len(body) == last - start + 1
        length = int.from_bytes(body[:4], "little")
        assert json.loads(zlib.decompress(body[4 : 4 + length])) == expected
        # the id under which the frontend asks for this record: circuit-tracer's own pairing
        assert cantor_pair(layer, feature) == FEATURE_IDS[layer, feature]
        assert _cantor_pairing(layer, feature) == FEATURE_IDS[layer, feature]


def test_range_forms_and_unsatisfiable_ranges(server: ViewerServer, graph_dir: Path) -> None:
    path = f"/features/{PACK}/{files_of(graph_dir).name}/layer_1.bin"
    data = (files_of(graph_dir) / "layer_1.bin").read_bytes()
    size = len(data)
    assert size == len(encode_record(RECORDS[(1, 0)])) + len(encode_record(RECORDS[(1, 3)]))
    whole = get(server, path)
    assert whole.status == 200 and whole.body == data  # type: ignore[attr-defined]
    assert get(server, path, {"Range": "bytes=-5"}).body == data[-5:]  # type: ignore[attr-defined]
    assert get(server, path, {"Range": "bytes=10-"}).body == data[10:]  # type: ignore[attr-defined]
    assert get(server, path, {"Range": "bytes=0-0,5-6"}).status == 200  # several: whole file
    for bad in (f"bytes={size}-", f"bytes={size + 10}-{size + 20}", "bytes=9-3", "bytes=x-"):
        refused = get(server, path, {"Range": bad})
        assert refused.status == 416, bad
        assert refused.getheader("Content-Range") == f"bytes */{size}", bad


@pytest.mark.parametrize(
    "path",
    [
        f"/features/{PACK}/summary.json.gz",
        f"/features/{PACK}/layer_9.bin",
        f"/features/{PACK}/../graph-metadata.json",
        f"/features/{PACK}/%2e%2e/%2e%2e/secret.json",
        f"/features/{PACK}/layer_1.bin/x",
        f"/features/{PACK}/CURRENT",
        f"/features/{PACK}/v-0123456789abcdef/index.json.gz",  # no such version
        f"/features/{PACK}/stored/index.json.gz",  # not a version name
        f"/features/{PACK}/v-0123456789abcdef/x/index.json.gz",
        "/features/no-such-pack/index.json.gz",
        "/features/../secret.json",
        "/features/graph-metadata.html",
    ],
)
def test_refuses_anything_but_the_files_of_a_pack(server: ViewerServer, path: str) -> None:
    assert get(server, path).status in (400, 404)


def test_a_symlink_out_of_the_folder_is_not_served(
    server: ViewerServer, graph_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"secret")
    (files_of(graph_dir) / "layer_7.bin").symlink_to(outside)
    assert get(server, f"/features/{PACK}/layer_7.bin").status == 404
    version = files_of(graph_dir).name
    assert get(server, f"/features/{PACK}/{version}/layer_7.bin").status == 404


def test_the_feature_page_lists_features_densest_first_and_the_index_links_it(
    server: ViewerServer,
) -> None:
    page = get(server, f"/features/{PACK}.html")
    assert page.status == 200
    text = page.body.decode()  # type: ignore[attr-defined]
    assert 'class="sortable"' in text and "data-type='number'" in text
    rows = text.split("<tbody>")[1].split("</tbody>")[0].strip().splitlines()
    assert [row.split("</td>")[2].rsplit(">", 1)[1] for row in rows] == [
        str(FEATURE_IDS[1, 0]),
        str(FEATURE_IDS[1, 3]),
        str(FEATURE_IDS[0, 2]),
    ]
    index = get(server, "/").body.decode()  # type: ignore[attr-defined]
    assert f"href='/features/{PACK}.html'" in index


SCORES = {
    "replacement_score": 0.71,
    "completeness_score": 0.91,
    "pruned_replacement_score": 0.65,
    "pruned_completeness_score": 0.88,
}


def test_the_graph_page_metadata_carries_the_four_scores(
    server: ViewerServer, graph_dir: Path
) -> None:
    """Without a database the scores come from the metadata entry, else they are null."""
    (graph_dir / "scored.json").write_text("{}")
    metadata = json.loads((graph_dir / "graph-metadata.json").read_text())
    metadata["graphs"].append({"slug": "scored", "scan": PACK, "prompt": "x", **SCORES})
    (graph_dir / "graph-metadata.json").write_text(json.dumps(metadata))
    graphs = json.loads(get(server, "/data/graph-metadata.json").body)["graphs"]  # type: ignore[attr-defined]
    by_slug = {graph["slug"]: graph for graph in graphs}
    assert {key: by_slug["scored"][key] for key in SCORES} == SCORES
    assert all(by_slug[SLUG][key] is None for key in SCORES)


@pytest.mark.parametrize(
    ("token", "shown"),
    [
        (" the", " the"),
        ("\\xe2\\x80\\x99s", "’s"),  # escapes that form a character: the character
        ("\\xd2", "<0xD2>"),  # a byte on its own: named, never a raw escape
        ("\\xe2\\x80", "<0xE2><0x80>"),
        (" caf\\xc3\\xa9", " café"),
        ("\x1b", "␛"),
        ("a\nb\tc\r", "a⏎b→c↵"),
    ],
)
def test_display_token_shows_the_text_a_token_spells(token: str, shown: str) -> None:
    assert display_token(token) == shown
