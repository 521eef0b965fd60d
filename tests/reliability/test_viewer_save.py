"""The viewer's Save (POST /save_graph/<slug>) writes only JSON a browser can read, of a bounded
size, and never the index: NaN, Infinity, deep nesting and `graph-metadata` each get a 4xx and
leave every file in the folder unchanged.

The real viewer server, in this process on a free port, over a graph file of circuit-tracer's
shape.
"""

from __future__ import annotations

import hashlib
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.viewer.conftest import serve_in_thread
from tracerflow.viewer.server import MAX_SAVE_BYTES, ViewerServer

SLUG = "toy-clt-ioi"
GRAPH = {
    "metadata": {
        "slug": SLUG,
        "scan": "toy-clt",
        "prompt_tokens": ["<|endoftext|>", "Mary", " and", " John"],
        "prompt": "<|endoftext|>Mary and John",
        "node_threshold": 0.8,
    },
    "qParams": {"pinnedIds": [], "supernodes": [], "linkType": "both"},
    "nodes": [
        {"node_id": "0_1_1", "feature": 1, "layer": "0", "ctx_idx": 1, "influence": 0.5},
        {"node_id": "E_123_0", "feature": None, "layer": "E", "ctx_idx": 0, "influence": 0.2},
    ],
    "links": [{"source": "E_123_0", "target": "0_1_1", "weight": 0.75}],
}


@pytest.fixture
def graph_files_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "graph-files"
    folder.mkdir()
    (folder / f"{SLUG}.json").write_text(json.dumps(GRAPH, indent=2))
    (folder / "graph-metadata.json").write_text(json.dumps({"graphs": [GRAPH["metadata"]]}))
    return folder


@pytest.fixture
def viewer(graph_files_dir: Path) -> Iterator[ViewerServer]:
    with serve_in_thread(graph_files_dir) as server:
        yield server


def save(server: ViewerServer, slug: str, body: bytes) -> tuple[int, bytes]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), port, timeout=30)
    try:
        headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
        connection.request("POST", f"/save_graph/{slug}", body=body, headers=headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def nested(depth: int) -> str:
    """JSON text of a string inside ``depth`` lists (built as text: too deep for json.dumps)."""
    return "[" * depth + '"x"' + "]" * depth


def body_with(**q_params: Any) -> bytes:
    return json.dumps({"qParams": q_params}).encode()


def raw_body(q_params_json: str) -> bytes:
    return ('{"qParams": ' + q_params_json + "}").encode()


REFUSED = {
    "NaN": raw_body('{"pruningThreshold": NaN}'),
    "Infinity": raw_body('{"pruningThreshold": Infinity}'),
    "minus Infinity": raw_body('{"pruningThreshold": -Infinity}'),
    "overflow to infinity": raw_body('{"pruningThreshold": 1e999}'),
    "NaN deep in a list": raw_body('{"clerps": [["a", [1, NaN]]]}'),
    "nested 3000 deep": raw_body('{"supernodes": ' + nested(3000) + "}"),
    "nested 100 deep": raw_body('{"supernodes": ' + nested(100) + "}"),
    # ~300 KB that an indented writer turned into tens of MB.
    "huge nested 300 KB": raw_body('{"clerps": [' + ",".join([nested(500)] * 300) + "]}"),
}


@pytest.mark.parametrize("body", REFUSED.values(), ids=REFUSED.keys())
def test_a_bad_body_gets_400_and_touches_nothing(
    viewer: ViewerServer, graph_files_dir: Path, body: bytes
) -> None:
    assert len(body) <= MAX_SAVE_BYTES
    before = snapshot(graph_files_dir)
    status, _ = save(viewer, SLUG, body)
    assert status == 400
    assert snapshot(graph_files_dir) == before


@pytest.mark.parametrize("slug", ["graph-metadata", "Graph-Metadata"])
def test_save_never_writes_the_index(
    viewer: ViewerServer, graph_files_dir: Path, slug: str
) -> None:
    before = snapshot(graph_files_dir)
    status, _ = save(viewer, slug, body_with(clickedId="x"))
    assert 400 <= status < 500
    assert snapshot(graph_files_dir) == before


def test_a_good_save_is_compact_strict_json(viewer: ViewerServer, graph_files_dir: Path) -> None:
    q_params = {"pinnedIds": "0_1_1,E_123_0", "supernodes": [["group", "0_1_1"]], "clickedId": "é"}
    status, _ = save(viewer, SLUG, body_with(**q_params))
    assert status == 200
    text = (graph_files_dir / f"{SLUG}.json").read_text(encoding="utf-8")

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} written")

    graph = json.loads(text, parse_constant=refuse)
    assert graph["qParams"] == q_params
    assert {k: v for k, v in graph.items() if k != "qParams"} == {
        k: v for k, v in GRAPH.items() if k != "qParams"
    }
    assert text == json.dumps(graph, separators=(",", ":"), ensure_ascii=False)


def test_a_large_legal_save_grows_the_file_by_about_its_size(
    viewer: ViewerServer, graph_files_dir: Path
) -> None:
    graph_path = graph_files_dir / f"{SLUG}.json"
    labels = [
        [f"supernode {i}", *(f"{layer}_{i}_{i % 7}" for layer in range(20))] for i in range(3500)
    ]
    body = body_with(supernodes=labels)
    assert 0.5 * MAX_SAVE_BYTES < len(body) <= MAX_SAVE_BYTES
    status, _ = save(viewer, SLUG, body)
    assert status == 200
    assert graph_path.stat().st_size <= len(json.dumps(GRAPH)) + len(body)


def test_a_saved_view_survives_the_next_run_and_a_restore(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, prefect_api: None
) -> None:
    """Pins saved in the viewer stay when the same prompt is scored again (a nightly suite used
    to erase them: the export step "restored" the generated file), and a graph file restored
    after damage comes back with them."""
    from tests.reliability.harness import PROMPTS, run

    home = tmp_path / "home"
    (row,) = run(home, PROMPTS[:1], monkeypatch).values()
    graph_file = Path(str(row.graph_files_path))
    nodes = json.loads(graph_file.read_text())["nodes"]
    q_params = {"pinnedIds": ",".join(node["node_id"] for node in nodes[:2]), "clickedId": "x"}
    with serve_in_thread(graph_file.parent) as server:
        status, _ = save(server, str(row.slug), json.dumps({"qParams": q_params}).encode())
    assert status == 200

    run(home, PROMPTS[:1], monkeypatch)  # the same prompt again: every stage cached
    assert json.loads(graph_file.read_text())["qParams"] == q_params

    graph_file.unlink()  # damaged: the next run restores it, with the saved view
    run(home, PROMPTS[:1], monkeypatch)
    restored = json.loads(graph_file.read_text())
    assert restored["qParams"] == q_params and restored["nodes"] == nodes


def save_with_headers(server: Any, body: bytes, headers: dict[str, str]) -> int:
    """POST a Save to ``server`` on 127.0.0.1 with ``headers`` (a forged Host, an Origin)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        connection.putrequest("POST", f"/save_graph/{SLUG}", skip_host=True)
        for name, value in {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            **headers,
        }.items():
            connection.putheader(name, value)
        connection.endheaders(body)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def test_a_viewer_on_every_interface_still_refuses_a_save_from_another_site(
    graph_files_dir: Path,
) -> None:
    """Bound to 0.0.0.0 the Host check is off (any name may reach it), so the Origin is checked
    against the viewer's own origins, not against the Host header a page can forge."""
    import threading

    from tracerflow.viewer.server import make_server

    server = make_server(graph_files_dir, host="0.0.0.0", port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    body = json.dumps({"qParams": {"pinnedIds": "0_1_1"}}).encode()
    before = snapshot(graph_files_dir)
    try:
        forged = {"Host": "evil.example", "Origin": "http://evil.example"}
        assert save_with_headers(server, body, forged) == 403
        assert snapshot(graph_files_dir) == before
        port = server.server_address[1]
        own = {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}
        assert save_with_headers(server, body, own) == 200
    finally:
        server.shutdown()
        server.server_close()


def test_a_save_holding_a_lone_surrogate_is_a_400_not_a_500(
    viewer: ViewerServer, graph_files_dir: Path
) -> None:
    before = snapshot(graph_files_dir)
    status, _ = save(viewer, SLUG, b'{"qParams": {"clickedId": "\\ud800"}}')
    assert status == 400
    assert snapshot(graph_files_dir) == before
