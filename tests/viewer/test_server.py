"""The viewer server, run as the real ``view`` command: what it serves, and what it refuses.

Refusals go to one viewer started for them all (``refusing_viewer``) and are checked against the
bytes on disk: the graph folder and a file beside it are unchanged after every attempt. Whatever
changes files gets a viewer and a copy of its own.
"""

from __future__ import annotations

import http.client
import json
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.viewer.conftest import (
    GRAPH_SPECS,
    REPO_ROOT,
    TRACERFLOW_COMMAND,
    RunningViewer,
    run_viewer,
    snapshot_files,
)
from tracerflow.viewer.server import MAX_SAVE_BYTES

SLUG = "toy-clt-ioi"


@pytest.fixture
def viewer(graph_files_dir: Path) -> Iterator[RunningViewer]:
    with run_viewer(graph_files_dir) as running:
        yield running


@pytest.fixture(scope="module")
def refusing_viewer(
    session_graph_files_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[RunningViewer, Path, dict[str, str]]]:
    """One viewer for the requests it must refuse, each changing nothing: on a private copy of
    the graph files with a secret beside them; also the hashes of everything under that home
    before the first request, which every test compares with after its own."""
    home = tmp_path_factory.mktemp("refusals") / "home"
    shutil.copytree(session_graph_files_dir, home / "graph-files")
    (home / "secret.json").write_text('{"secret": true}')
    before = snapshot_files(home)
    with run_viewer(home / "graph-files") as running:
        yield running, home, before


def request(
    viewer: RunningViewer,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """Send ``path`` exactly as given (no client-side normalisation)."""
    address = urlsplit(viewer.url)
    connection = http.client.HTTPConnection(str(address.hostname), address.port, timeout=10)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def save_headers(body: bytes) -> dict[str, str]:
    return {"Content-Type": "application/json", "Content-Length": str(len(body))}


def test_binds_loopback_by_default_and_prints_the_url(viewer: RunningViewer) -> None:
    assert urlsplit(viewer.url).hostname == "127.0.0.1"


def test_index_lists_every_graph(viewer: RunningViewer) -> None:
    status, body = request(viewer, "GET", "/")
    assert status == 200
    for slug in GRAPH_SPECS:
        assert f"/graph.html?slug={slug}" in body.decode()


def test_serves_graph_files_and_the_viewable_metadata(
    viewer: RunningViewer, graph_files_dir: Path
) -> None:
    status, body = request(viewer, "GET", f"/graph_data/{SLUG}.json")
    assert status == 200
    assert body == (graph_files_dir / f"{SLUG}.json").read_bytes()
    status, body = request(viewer, "GET", "/data/graph-metadata.json")
    assert status == 200
    assert {g["slug"] for g in json.loads(body)["graphs"]} == set(GRAPH_SPECS)


def test_serves_the_viewer_and_every_file_it_references_locally(viewer: RunningViewer) -> None:
    status, page = request(viewer, "GET", "/graph.html")
    assert status == 200
    assert b"https://" not in page and b"http://" not in page
    references = re.findall(r"(?:src|href)='\./([^']+)'", page.decode())
    assert "third_party/d3/d3.min.js" in references
    assert "third_party/jetpack-lite/jetpack-lite.js" in references
    for reference in references:
        assert request(viewer, "GET", "/" + reference)[0] == 200, reference


def test_finds_the_graph_folder_through_tracerflow_home(graph_files_dir: Path) -> None:
    with run_viewer(graph_files_dir, pass_graph_dir=False) as viewer:
        status, body = request(viewer, "GET", "/")
    assert status == 200
    assert f"/graph.html?slug={SLUG}" in body.decode()
    assert str(graph_files_dir) in "".join(viewer.output)


def test_the_main_cli_has_the_view_command() -> None:
    from typer.testing import CliRunner

    from tracerflow.cli import app

    result = CliRunner().invoke(app, ["view", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--open", "--graph-dir", "--read-only"):
        assert option in result.output


TRAVERSALS = [
    "/graph_data/../../etc/passwd",
    "/graph_data/..%2f..%2fetc%2fpasswd",
    "/graph_data/%2e%2e/%2e%2e/etc/passwd",
    "/graph_data/%2E%2E%2F%2E%2E%2Fsecret.json",
    "/graph_data/%252e%252e%252fsecret.json",
    "/graph_data/../secret.json",
    "/graph_data//etc/passwd",
    "/graph_data/%2Fetc%2Fpasswd",
    "/graph_data/..\\secret.json",
    "/graph_data/..%5csecret.json",
    "/graph_data/C:%5Cwindows%5Cwin.ini",
    "/graph_data/toy-clt-ioi.json%00.txt",
    "/graph_data/graph-metadata.json.lock",
    "/graph_data/.json",
    "/graph_data/%ff.json",
    "/../../etc/passwd",
    "//etc/passwd",
    "/etc/passwd",
    "/secret.json",
    "/../secret.json",
    "/%2e%2e/secret.json",
    "/third_party/../server.py",
    "/third_party/../../viewer/server.py",
    "/server.py",
    "/cli.py",
    "/static/graph.html",
    "/README.md",
    "/third_party/d3/LICENSE",
    "/data/../secret.json",
    "/data/secret.json",
    "/data/toy-clt-ioi.json",
    "http://example.com/etc/passwd",
    "*",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_attempts_get_4xx_and_touch_nothing(
    refusing_viewer: tuple[RunningViewer, Path, dict[str, str]], path: str
) -> None:
    viewer, home, before = refusing_viewer
    status, body = request(viewer, "GET", path)
    assert 400 <= status < 500, (path, status)
    assert b"secret" not in body and b"root:" not in body
    assert snapshot_files(home) == before


def test_a_symlink_out_of_the_graph_folder_is_not_followed(
    viewer: RunningViewer, graph_files_dir: Path
) -> None:
    secret = graph_files_dir.parent / "secret.json"
    secret.write_text('{"secret": true}')
    (graph_files_dir / "leak.json").symlink_to(secret)
    status, body = request(viewer, "GET", "/graph_data/leak.json")
    assert status == 404
    assert b"secret" not in body


def test_a_foreign_host_header_is_refused(
    refusing_viewer: tuple[RunningViewer, Path, dict[str, str]],
) -> None:
    # A page on another name that resolves to 127.0.0.1 (DNS rebinding) gets nothing.
    viewer, home, before = refusing_viewer
    status, _ = request(viewer, "GET", "/", headers={"Host": "evil.example:80"})
    assert status == 403
    assert snapshot_files(home) == before


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_not_allowed(
    refusing_viewer: tuple[RunningViewer, Path, dict[str, str]], method: str
) -> None:
    viewer, home, before = refusing_viewer
    assert request(viewer, method, f"/graph_data/{SLUG}.json")[0] == 405
    assert snapshot_files(home) == before


def test_save_rewrites_only_the_view_state(viewer: RunningViewer, graph_files_dir: Path) -> None:
    graph_path = graph_files_dir / f"{SLUG}.json"
    before = json.loads(graph_path.read_text())
    q_params = {"pinnedIds": "a,b", "supernodes": "[]", "clickedId": "x"}
    body = json.dumps({"qParams": q_params, "timestamp": "now"}).encode()
    status, _ = request(viewer, "POST", f"/save_graph/{SLUG}", body, save_headers(body))
    assert status == 200
    after = json.loads(graph_path.read_text())
    assert after["qParams"] == q_params
    assert {k: v for k, v in after.items() if k != "qParams"} == {
        k: v for k, v in before.items() if k != "qParams"
    }


def _save_refusals() -> list[tuple[str, str, bytes, dict[str, str], int]]:
    good = json.dumps({"qParams": {"clickedId": "x"}}).encode()
    json_type = {"Content-Type": "application/json"}
    return [
        ("bad slug", "/save_graph/..%2f..%2fsecret", good, json_type, 400),
        ("dotdot", "/save_graph/../secret", good, json_type, 400),
        ("unknown graph", "/save_graph/nope", good, json_type, 404),
        ("form post", f"/save_graph/{SLUG}", good, {"Content-Type": "text/plain"}, 415),
        ("not json", f"/save_graph/{SLUG}", b"{not json", json_type, 400),
        ("no qParams", f"/save_graph/{SLUG}", b'{"nodes": []}', json_type, 400),
        (
            "unknown key",
            f"/save_graph/{SLUG}",
            json.dumps({"qParams": {"nodes": []}}).encode(),
            json_type,
            400,
        ),
        (
            "cross origin",
            f"/save_graph/{SLUG}",
            good,
            {**json_type, "Origin": "http://evil.example"},
            403,
        ),
        ("other path", "/save_graph", good, json_type, 404),
    ]


@pytest.mark.parametrize(
    ("path", "body", "headers", "expected"),
    [case[1:] for case in _save_refusals()],
    ids=[case[0] for case in _save_refusals()],
)
def test_bad_saves_get_4xx_and_touch_nothing(
    refusing_viewer: tuple[RunningViewer, Path, dict[str, str]],
    path: str,
    body: bytes,
    headers: dict[str, str],
    expected: int,
) -> None:
    viewer, home, before = refusing_viewer
    status, _ = request(viewer, "POST", path, body, {**headers, "Content-Length": str(len(body))})
    assert status == expected
    assert snapshot_files(home) == before


def test_an_oversized_save_gets_413_unread(
    refusing_viewer: tuple[RunningViewer, Path, dict[str, str]],
) -> None:
    viewer, home, before = refusing_viewer
    address = urlsplit(viewer.url)
    # Announce a body over the limit, send only its start: the server must answer at once.
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            (
                f"POST /save_graph/{SLUG} HTTP/1.1\r\nHost: {address.netloc}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {MAX_SAVE_BYTES + 1}\r\n\r\n"
                '{"qParams": {"clickedId": "'
            ).encode()
        )
        status_line = sock.makefile("rb").readline()
    assert status_line.split()[1] == b"413"
    assert snapshot_files(home) == before


def test_a_save_without_length_gets_411(viewer: RunningViewer) -> None:
    address = urlsplit(viewer.url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            f"POST /save_graph/{SLUG} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            "Content-Type: application/json\r\n\r\n".encode()
        )
        status_line = sock.makefile("rb").readline()
    assert status_line.split()[1] == b"411"


def test_read_only_refuses_saves(graph_files_dir: Path) -> None:
    before = snapshot_files(graph_files_dir)
    body = json.dumps({"qParams": {"clickedId": "x"}}).encode()
    with run_viewer(graph_files_dir, "--read-only") as viewer:
        status, _ = request(viewer, "POST", f"/save_graph/{SLUG}", body, save_headers(body))
    assert status == 405
    assert snapshot_files(graph_files_dir) == before


def test_ctrl_c_stops_it_cleanly(graph_files_dir: Path) -> None:
    with run_viewer(graph_files_dir) as viewer:
        viewer.process.send_signal(signal.SIGINT)
        assert viewer.process.wait(timeout=10) == 0
    assert "Stopped." in "".join(viewer.output)


def test_a_port_in_use_is_one_line_and_exit_1(graph_files_dir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                *TRACERFLOW_COMMAND,
                "view",
                "--port",
                str(port),
                "--graph-dir",
                str(graph_files_dir),
            ],
            cwd=REPO_ROOT,
            env={"PYTHONPATH": str(REPO_ROOT), "TRACERFLOW_HOME": str(graph_files_dir.parent)},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert result.stderr.startswith("error: cannot listen on")
