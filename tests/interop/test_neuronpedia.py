"""Graphs Neuronpedia takes: every exported graph passes Neuronpedia's own validator schema;
``tracerflow export neuronpedia`` carries the saved subgraph and labels in the schema's types;
``tracerflow upload`` goes through the ``neuronpedia`` package to a stand-in of Neuronpedia's
graph API on 127.0.0.1 and never shows the key."""

from __future__ import annotations

import gzip
import json
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from tests.http_servers import serving
from tracerflow.cli import app
from tracerflow.errors import ConfigError
from tracerflow.interop.neuronpedia import feature_labels, upload_q_params
from tracerflow.viewer.saved_views import save_view
from tracerflow.viewer.slugs import is_valid_slug

SCHEMA = json.loads(
    (Path(__file__).parent / "data" / "neuronpedia-graph-schema.json").read_text("utf-8")
)
API_KEY = "np-test-key-5f1d0c9e"  # distinctive, so any leak is found by a substring search


def validation_errors(graph: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(graph)]


def graph_files(home: Path) -> list[Path]:
    folder = home / "graph-files"
    # A graph's saved view (<slug>.view.json) and the index (reserved) have no valid slug.
    return sorted(p for p in folder.glob("*.json") if is_valid_slug(p.stem))


def test_every_exported_demo_graph_passes_neuronpedias_schema(demo_home: Path) -> None:
    files = graph_files(demo_home)
    assert len(files) >= 2  # the toy CLT and PLT on the demo's prompts
    for path in files:
        assert validation_errors(json.loads(path.read_text("utf-8"))) == [], path.name


def test_the_viewers_url_text_becomes_the_schemas_lists() -> None:
    saved = {
        "pinnedIds": "0_73_10,E_26_3,27_321_14",
        "supernodes": '[["names", "0_73_10", "E_26_3"]]',
        "linkType": "both",
        "clickedId": "0_73_10",
        "clerps": '[["2774", "Alice after and"]]',
    }
    shaped = upload_q_params(saved)
    assert shaped["pinnedIds"] == ["0_73_10", "E_26_3", "27_321_14"]
    assert shaped["supernodes"] == [["names", "0_73_10", "E_26_3"]]
    assert shaped["linkType"] == "both" and shaped["clickedId"] == "0_73_10"
    assert upload_q_params({}) == {"pinnedIds": [], "supernodes": []}
    assert upload_q_params({"pinnedIds": ""})["pinnedIds"] == []
    assert feature_labels(saved) == {"2774": "Alice after and"}


@pytest.mark.parametrize(
    "saved",
    [{"supernodes": "[[1,"}, {"supernodes": '{"a": 1}'}, {"pinnedIds": 7}, {"clerps": "[[1]]"}],
)
def test_a_malformed_saved_view_is_one_config_error(saved: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="the saved view's"):
        upload_q_params(saved) if "clerps" not in saved else feature_labels(saved)


@pytest.fixture
def exported_home(demo_home: Path, tmp_path: Path) -> tuple[Path, str, list[str]]:
    """A copy of the demo's graph files and scores, one graph with a saved subgraph and a
    label; (home, slug, pinned ids)."""
    home = tmp_path / "home"
    shutil.copytree(demo_home / "graph-files", home / "graph-files")
    shutil.copy2(demo_home / "scores.duckdb", home / "scores.duckdb")
    path = graph_files(home)[0]
    graph = json.loads(path.read_text("utf-8"))
    features = [n for n in graph["nodes"] if n["feature_type"] == "cross layer transcoder"]
    errors = [n for n in graph["nodes"] if "error" in n["feature_type"]]
    pinned = [features[0]["node_id"], features[1]["node_id"], errors[0]["node_id"]]
    q_params = {
        "pinnedIds": ",".join(pinned),
        "supernodes": json.dumps([["pair", features[0]["node_id"], features[1]["node_id"]]]),
        "clerps": json.dumps([[str(features[0]["feature"]), "says a name"]]),
        "linkType": "both",
    }
    save_view(home / "graph-files", path.stem, q_params)
    return home, path.stem, pinned


def test_export_writes_an_upload_ready_graph_with_the_saved_subgraph(
    exported_home: tuple[Path, str, list[str]], tmp_path: Path
) -> None:
    home, slug, pinned = exported_home
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        ["export", "neuronpedia", slug, "--out", str(out), "--store", str(home / "scores.duckdb"),
         "--graph-dir", str(home / "graph-files")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    graph = json.loads(out.read_text("utf-8"))
    assert validation_errors(graph) == []
    generated = json.loads((home / "graph-files" / f"{slug}.json").read_text("utf-8"))
    assert graph["metadata"]["slug"] == slug
    assert graph["metadata"]["prompt_tokens"] == generated["metadata"]["prompt_tokens"]
    assert graph["metadata"]["scan"] == "toy-gpt2"  # the model the score row names
    assert graph["metadata"]["info"]["generator"]["name"] == "tracerflow"
    assert graph["qParams"]["pinnedIds"] == pinned
    assert graph["qParams"]["supernodes"][0][1:] == pinned[:2]
    node_ids = {n["node_id"] for n in graph["nodes"]}
    assert set(pinned) <= node_ids
    labelled = [n for n in graph["nodes"] if n["clerp"] == "says a name"]
    assert labelled and all(n["feature_type"] == "cross layer transcoder" for n in labelled)
    assert len(graph["links"]) == len(generated["links"])


def test_export_without_a_model_or_scan_and_of_an_unknown_slug_fails_in_one_line(
    exported_home: tuple[Path, str, list[str]], tmp_path: Path
) -> None:
    home, slug, _ = exported_home
    empty_store = tmp_path / "none.duckdb"
    common = ["--graph-dir", str(home / "graph-files"), "--out", str(tmp_path / "x.json")]
    for args, message in [
        ([slug, "--store", str(empty_store)], "give --scan"),
        (["no-such-graph", "--store", str(home / "scores.duckdb")], "no graph 'no-such-graph'"),
        (["../etc", "--store", str(home / "scores.duckdb")], "invalid graph slug"),
    ]:
        result = CliRunner().invoke(app, ["export", "neuronpedia", *args, *common])
        assert result.exit_code == 2, result.output
        assert result.output.count("\n") == 1 and message in result.output, result.output
        assert not (tmp_path / "x.json").exists()
    ok = CliRunner().invoke(
        app, ["export", "neuronpedia", slug, "--store", str(empty_store), "--scan", "gpt2-small",
              *common],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert json.loads((tmp_path / "x.json").read_text("utf-8"))["metadata"]["scan"] == "gpt2-small"


@dataclass
class StandIn:
    """What the stand-in Neuronpedia saw: the keys sent, and the graphs stored."""

    url: str
    keys: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    saved: list[str] = field(default_factory=list)


@pytest.fixture
def neuronpedia_stand_in() -> Iterator[StandIn]:
    """Neuronpedia's graph upload API as the ``neuronpedia`` package calls it: POST
    graph/signed-put -> a PUT URL; PUT the gzipped file; POST graph/save-to-db; GET
    graph/<model>/<slug>. A key other than ``API_KEY`` gets 401."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, status: HTTPStatus, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorized(self) -> bool:
            state.keys.append(self.headers.get("X-Api-Key", ""))
            if self.headers.get("X-Api-Key") != API_KEY:
                self._answer(HTTPStatus.UNAUTHORIZED, {"error": "unauthorized"})
                return False
            return True

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def do_POST(self) -> None:
            body = self._body()
            if not self._authorized():
                return
            if self.path == "/api/graph/signed-put":
                request = json.loads(body)
                self._answer(HTTPStatus.OK, {"url": f"{state.url}/s3/{request['filename']}",
                                             "putRequestId": request["filename"]})  # fmt: skip
            elif self.path == "/api/graph/save-to-db":
                state.saved.append(json.loads(body)["putRequestId"])
                self._answer(HTTPStatus.OK, {"url": f"{state.url}/graph"})
            else:
                self._answer(HTTPStatus.NOT_FOUND, {})

        def do_PUT(self) -> None:
            state.uploads[self.path.removeprefix("/s3/")] = self._body()
            self._answer(HTTPStatus.OK, {})

        def do_GET(self) -> None:
            if not self._authorized():
                return
            model_id, slug = self.path.removeprefix("/api/graph/").split("/")
            self._answer(HTTPStatus.OK, {"id": "g1", "modelId": model_id, "slug": slug,
                                         "promptTokens": [], "prompt": "", "titlePrefix": "",
                                         "url": f"{state.url}/{model_id}/{slug}.json"})  # fmt: skip

    state = StandIn(url="")
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), Handler)) as state.url:
        yield state


def upload(home: Path, slug: str, api_url: str, key: str | None, monkeypatch: pytest.MonkeyPatch):
    if key is None:
        monkeypatch.delenv("NEURONPEDIA_API_KEY", raising=False)
    else:
        monkeypatch.setenv("NEURONPEDIA_API_KEY", key)
    return CliRunner().invoke(
        app,
        ["upload", slug, "--api-url", f"{api_url}/api", "--store", str(home / "scores.duckdb"),
         "--graph-dir", str(home / "graph-files")],
    )  # fmt: skip


def test_upload_sends_the_export_through_the_neuronpedia_package_and_never_shows_the_key(
    exported_home: tuple[Path, str, list[str]],
    neuronpedia_stand_in: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home, slug, pinned = exported_home
    caplog.set_level(logging.DEBUG)
    result = upload(home, slug, neuronpedia_stand_in.url, API_KEY, monkeypatch)
    assert result.exit_code == 0, result.output
    assert neuronpedia_stand_in.saved == [f"{slug}.json"]
    graph = json.loads(gzip.decompress(neuronpedia_stand_in.uploads[f"{slug}.json"]))
    assert validation_errors(graph) == []
    assert graph["qParams"]["pinnedIds"] == pinned and graph["metadata"]["scan"] == "toy-gpt2"
    assert set(neuronpedia_stand_in.keys) == {API_KEY}  # sent, as the API wants
    assert f"uploaded {slug}" in result.output
    assert any("neuronpedia:" in r.getMessage() for r in caplog.records)  # progress kept
    assert API_KEY not in result.output + caplog.text


def test_a_refused_key_a_missing_key_and_no_server_each_end_in_one_line_without_the_key(
    exported_home: tuple[Path, str, list[str]],
    neuronpedia_stand_in: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home, slug, _ = exported_home
    caplog.set_level(logging.DEBUG)
    wrong_key = "np-wrong-key-77aa31"
    refused = upload(home, slug, neuronpedia_stand_in.url, wrong_key, monkeypatch)
    assert refused.exit_code == 2
    assert refused.output.startswith("error: Neuronpedia at ") and "refused the API key" in (
        refused.output
    )
    missing = upload(home, slug, neuronpedia_stand_in.url, None, monkeypatch)
    assert missing.exit_code == 2 and "set NEURONPEDIA_API_KEY" in missing.output
    unreachable = upload(home, slug, "http://127.0.0.1:9", wrong_key, monkeypatch)
    assert unreachable.exit_code == 1
    assert "cannot reach Neuronpedia at http://127.0.0.1:9/api" in unreachable.output
    for result in (refused, missing, unreachable):
        assert result.output.count("\n") == 1, result.output
        assert wrong_key not in result.output
    assert wrong_key not in caplog.text
    assert neuronpedia_stand_in.uploads == {}
