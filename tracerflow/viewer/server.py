"""A small HTTP server for the viewer: the index, the viewer's static files, the graph files.

Stdlib only (``ThreadingHTTPServer``). What it serves is decided by lookup, never by joining a
request path to a folder:

- ``/`` and ``/index.html``: the index page (built per request, so new graphs show on reload);
- the viewer's static files: a table made once at start from ``static/`` and ``third_party/``
  (``.html``, ``.js``, ``.css`` only), so a path not in the table is a 404 whatever it contains;
- ``/data/graph-metadata.json``: the viewable entries of the folder's metadata file;
- ``/graph_data/<slug>.json``: a graph file, after ``validate_slug``;
- ``/features/index.json``: the names of the feature packs in the folder's ``features/`` and
  each one's current version; ``/features/<name>/<version>/index.json.gz`` and
  ``/features/<name>/<version>/layer_<n>.bin`` (or without ``<version>``: the current one): a
  pack's files (``tracerflow.dashboards.pack``), the ``.bin`` with HTTP Range requests (206,
  416), as circuit-tracer's frontend reads them; ``/features/<name>.html``: the pack's feature
  table;
- ``POST /save_graph/<slug>``: the viewer's Save button (pinned nodes, supernodes, ...), which
  rewrites only the ``qParams`` of an existing graph file: strict JSON (no ``NaN`` or
  ``Infinity``), bounded in size and depth, written compactly; never ``graph-metadata``; off
  with ``read_only``. With a score store and an artifact store, a Save that pins nodes also
  scores that subgraph (``tracerflow.subgraphs``), records it and answers its scores.

Requests with ``..``, ``.``, backslashes, NUL or bad percent-encodings are refused with 400
before routing. When bound to a loopback address, requests naming another ``Host`` are refused
(a DNS-rebinding page cannot reach it), and a cross-origin Save is refused. Every answer carries
a Content-Security-Policy that lets the page load and fetch only from this server.
"""

from __future__ import annotations

import contextlib
import gzip
import ipaddress
import json
import logging
import socket
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from tracerflow.fsutil import write_text_atomically
from tracerflow.storage.store import StoreLike
from tracerflow.storage.subgraphs import SubgraphRecord
from tracerflow.viewer.features import (
    FEATURE_LIST_PATH,
    FeatureFile,
    feature_file,
    feature_pack_names,
    feature_pack_versions,
    render_feature_page,
)
from tracerflow.viewer.graph_ids import GRAPH_METADATA_FILE
from tracerflow.viewer.index import (
    build_graph_index,
    load_db_metrics,
    render_index_html,
    transcoder_names_by_scan,
    viewer_metadata,
)
from tracerflow.viewer.saved_views import (
    check_depth_and_numbers,
    graph_text,
    refuse_constant,
    save_view,
    strict_json,
    strict_loads,
)
from tracerflow.viewer.slugs import InvalidSlugError, slug_from_graph_file_name, validate_slug

logger = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
STATIC_DIR = PACKAGE_DIR / "static"
THIRD_PARTY_DIR = PACKAGE_DIR / "third_party"

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8041
# A Save body holds URL-sized view state (pinned ids, supernodes, labels): 1 MiB is generous.
MAX_SAVE_BYTES = 1024 * 1024
# The viewer sends URL parameters (strings) under qParams: a body is two levels deep. Lists
# of lists stay well inside this; thousands of levels are an attack on the parser.
MAX_SAVE_DEPTH = 32
# What Save may add to a graph file: compact JSON of the parsed body is about its size (numbers
# may grow a few bytes: 1e5 -> 100000.0), so twice the request bound is never reached honestly.
MAX_SAVED_Q_PARAMS_BYTES = 2 * MAX_SAVE_BYTES
# Graph files are JSON of up to hundreds of MB; above this, gzip when the client accepts it.
GZIP_THRESHOLD_BYTES = 1024 * 1024

# The viewer's Save button sends these keys (index.html upstream); nothing else is written.
SAVE_KEYS = frozenset(
    {"pinnedIds", "supernodes", "linkType", "clickedId", "sg_pos", "pruningThreshold", "clerps"}
)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}
# style-src needs 'unsafe-inline' for the style attributes d3 and the viewer set; scripts do not.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)


def static_routes() -> dict[str, Path]:
    """URL path -> file for every static file the viewer may load, fixed at start."""
    routes: dict[str, Path] = {}
    for root, prefix in ((STATIC_DIR, "/"), (THIRD_PARTY_DIR, "/third_party/")):
        for path in sorted(root.rglob("*")):
            if path.is_file() and path.suffix in CONTENT_TYPES:
                routes[prefix + path.relative_to(root).as_posix()] = path
    return routes


class BadRequest(Exception):
    """A request refused with a 4xx status before it touches anything."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class ViewerServer(ThreadingHTTPServer):
    """The viewer's HTTP server over one graph-files folder."""

    daemon_threads = True
    # socketserver's default backlog of 5 dropped connections when a page opened with many
    # parallel requests (4 of 200 got no answer in 60 s).
    request_queue_size = 128

    def __init__(
        self,
        graph_files_dir: Path,
        *,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        store: StoreLike | None = None,
        read_only: bool = False,
        artifacts_dir: Path | None = None,
    ) -> None:
        self.graph_files_dir = graph_files_dir.expanduser().resolve()
        self.store = store
        self.artifacts_dir = artifacts_dir
        self.read_only = read_only
        self.routes = static_routes()
        self.save_lock = threading.Lock()
        # Scoring sets torch's thread count (process-wide) to the graph's: one Save at a time.
        self.score_lock = threading.Lock()
        if ":" in host:  # an IPv6 literal such as ::1
            self.address_family = socket.AF_INET6
        super().__init__((host, port), ViewerRequestHandler)
        self.allowed_hosts = _allowed_hosts(host, self.server_address[1])
        self.own_origins = _own_origins(host, self.server_address[1])

    @property
    def url(self) -> str:
        host, port = str(self.server_address[0]), self.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        if shown in ("0.0.0.0", "[::]"):
            shown = "127.0.0.1"
        return f"http://{shown}:{port}/"


def make_server(
    graph_files_dir: Path,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    store: StoreLike | None = None,
    read_only: bool = False,
    artifacts_dir: Path | None = None,
) -> ViewerServer:
    """Bind the viewer server (``port=0``: any free port; see ``ViewerServer.url``). Save scores
    pinned subgraphs when both ``store`` and ``artifacts_dir`` (where the graphs are) are given."""
    return ViewerServer(
        graph_files_dir,
        host=host,
        port=port,
        store=store,
        read_only=read_only,
        artifacts_dir=artifacts_dir,
    )


def _own_origins(host: str, port: int) -> frozenset[str]:
    """The origins of this viewer's own pages, which alone may Save: its loopback names, the
    address it is bound to and, bound to every interface, this machine's names and addresses.
    Checked on every interface (the Host check, loopback only, does not cover a wildcard bind,
    where a page from any other site could Save with a forged Host)."""
    names = {"127.0.0.1", "localhost", "[::1]"}
    if host in ("0.0.0.0", "::", ""):
        machine = {socket.gethostname(), socket.getfqdn()}
        for name in list(machine):
            with contextlib.suppress(OSError):
                machine |= {info[4][0] for info in socket.getaddrinfo(name, None)}
        names |= {f"[{name}]" if ":" in name else name for name in machine if name}
    else:
        names.add(f"[{host}]" if ":" in host else host)
    return frozenset(f"http://{name}:{port}" for name in names)


def _allowed_hosts(host: str, port: int) -> frozenset[str] | None:
    """Host headers accepted when bound to loopback; ``None`` (any) otherwise."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        return None
    names = ("127.0.0.1", "localhost", "[::1]")
    return frozenset(name for base in names for name in (base, f"{base}:{port}"))


class ViewerRequestHandler(BaseHTTPRequestHandler):
    """Routes GET/HEAD to the index, static files and graph files; POST to Save."""

    server: ViewerServer
    server_version = "tracerflow-viewer"
    protocol_version = "HTTP/1.1"
    # The size of the file a 416 answer refers to (its ``Content-Range: bytes */size``).
    unsatisfiable_size = -1

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s - %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        self.send_header("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        super().end_headers()

    # --- GET / HEAD -----------------------------------------------------------------------

    def do_GET(self) -> None:
        self._handle(self._get)

    def do_HEAD(self) -> None:
        self._handle(self._get, head=True)

    def do_POST(self) -> None:
        self._handle(self._post)

    def do_PUT(self) -> None:
        self._method_not_allowed()

    def do_DELETE(self) -> None:
        self._method_not_allowed()

    def do_PATCH(self) -> None:
        self._method_not_allowed()

    def do_OPTIONS(self) -> None:
        # No CORS: answering a preflight would let other origins call Save.
        self._method_not_allowed()

    def _method_not_allowed(self) -> None:
        self._send_error(HTTPStatus.METHOD_NOT_ALLOWED, "method not allowed")

    def _handle(self, route: Any, **kwargs: Any) -> None:
        try:
            self._check_host()
            route(_request_path(self.path), **kwargs)
        except BadRequest as exc:
            if isinstance(exc, RangeNotSatisfiable):
                self.unsatisfiable_size = exc.size
            self._send_error(exc.status, exc.message, head=kwargs.get("head", False))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (a reload mid-download); nothing to answer
        except Exception:
            logger.exception("error answering %s %s", self.command, self.path)
            self._send_error(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    def _check_host(self) -> None:
        allowed = self.server.allowed_hosts
        if allowed is not None and self.headers.get("Host", "").lower() not in allowed:
            raise BadRequest(HTTPStatus.FORBIDDEN, "unexpected Host header")

    def _get(self, path: str, head: bool = False) -> None:
        if path in ("/", "/index.html"):
            folder = self.server.graph_files_dir
            entries = build_graph_index(folder, self.server.store)
            page = render_index_html(
                entries, folder, feature_pack_names(folder), load_db_metrics(self.server.store)
            )
            self._send_bytes(page.encode("utf-8"), CONTENT_TYPES[".html"], head=head)
        elif path == "/favicon.ico":
            self._send_bytes(b"", None, status=HTTPStatus.NO_CONTENT, head=head)
        elif path in self.server.routes:
            file_path = self.server.routes[path]
            self._send_bytes(file_path.read_bytes(), CONTENT_TYPES[file_path.suffix], head=head)
        elif path == f"/data/{GRAPH_METADATA_FILE}":
            metadata = viewer_metadata(self.server.graph_files_dir, self.server.store)
            self._send_bytes(json.dumps(metadata).encode("utf-8"), "application/json", head=head)
        elif path.startswith("/graph_data/"):
            graph_path = self._graph_path(path.removeprefix("/graph_data/"))
            self._send_bytes(graph_path.read_bytes(), "application/json", head=head)
        elif path == FEATURE_LIST_PATH:
            versions = feature_pack_versions(self.server.graph_files_dir)
            listing = {"scans": sorted(versions), "versions": versions}
            self._send_bytes(json.dumps(listing).encode(), "application/json", head=head)
        elif path.startswith("/features/"):
            self._send_feature_file(path.removeprefix("/features/"), head=head)
        else:
            raise BadRequest(HTTPStatus.NOT_FOUND, "not found")

    def _graph_path(self, file_name: str) -> Path:
        """The graph file for ``<slug>.json``: validated, inside the folder, existing."""
        try:
            slug = slug_from_graph_file_name(file_name)
        except InvalidSlugError as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "invalid graph name") from exc
        return self._existing_graph(slug)

    def _existing_graph(self, slug: str) -> Path:
        folder = self.server.graph_files_dir
        graph_path = folder / f"{slug}.json"
        # A symlink planted in the folder must not lead outside it.
        if not graph_path.is_file() or graph_path.resolve().parent != folder:
            raise BadRequest(HTTPStatus.NOT_FOUND, "no such graph")
        return graph_path

    def _send_feature_file(self, relative: str, head: bool) -> None:
        found: FeatureFile | None = feature_file(self.server.graph_files_dir, relative)
        if found is None:
            raise BadRequest(HTTPStatus.NOT_FOUND, "no such feature file")
        if found.kind == "page":
            entries = build_graph_index(self.server.graph_files_dir, self.server.store)
            names = transcoder_names_by_scan(entries).get(found.pack_name)
            page = render_feature_page(found.pack_name, found.path, names)
            self._send_bytes(page.encode("utf-8"), CONTENT_TYPES[".html"], head=head)
        elif found.kind == "index":
            # Sent as stored, without Content-Encoding: the frontend inflates it with pako.
            self._send_bytes(found.path.read_bytes(), "application/gzip", head=head, compress=False)
        else:
            self._send_range(found.path, head=head)

    def _send_range(self, path: Path, head: bool) -> None:
        """A file with single-range support (RFC 9110 14): 206 for a satisfiable ``bytes=``
        range, 416 for a malformed or unsatisfiable one, 200 (whole file) without one or for
        several ranges (which a server may ignore)."""
        size = path.stat().st_size
        requested = parse_byte_range(self.headers.get("Range"), size)
        if requested is None:
            start, end, status = 0, size - 1, HTTPStatus.OK
        else:
            start, end = requested
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if head or end < start:
            return
        with path.open("rb") as source:
            source.seek(start)
            remaining = end - start + 1
            while remaining > 0:
                chunk = source.read(min(remaining, 1 << 20))
                if not chunk:
                    break
                self.wfile.write(chunk)
                remaining -= len(chunk)

    # --- POST /save_graph/<slug> ----------------------------------------------------------

    def _post(self, path: str) -> None:
        if not path.startswith("/save_graph/"):
            raise BadRequest(HTTPStatus.NOT_FOUND, "not found")
        if self.server.read_only:
            raise BadRequest(HTTPStatus.METHOD_NOT_ALLOWED, "this viewer is read-only")
        origin = self.headers.get("Origin")
        if origin is not None and origin.lower() not in self.server.own_origins:
            raise BadRequest(HTTPStatus.FORBIDDEN, "cross-origin save refused")
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            # Also what makes a cross-site form or no-cors fetch unable to reach this.
            raise BadRequest(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send application/json")
        length = self._content_length()
        try:
            slug = validate_slug(path.removeprefix("/save_graph/"))
        except InvalidSlugError as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "invalid graph name") from exc
        graph_path = self._existing_graph(slug)
        q_params = _parse_save_body(self.rfile.read(length))
        try:
            q_params_bytes = strict_json(q_params).encode("utf-8")
        except UnicodeEncodeError as exc:  # a lone surrogate ("\ud800"): no UTF-8 text holds it
            raise BadRequest(HTTPStatus.BAD_REQUEST, "body holds text that is not UTF-8") from exc
        if len(q_params_bytes) > MAX_SAVED_Q_PARAMS_BYTES:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "view state too large")

        with self.server.save_lock:
            try:
                graph = strict_loads(graph_path.read_bytes())
            except (ValueError, RecursionError) as exc:
                raise BadRequest(HTTPStatus.CONFLICT, "the graph file is not strict JSON") from exc
            if not isinstance(graph, dict):
                raise BadRequest(HTTPStatus.CONFLICT, "the graph file is not a JSON object")
            # Kept beside the graph first: the next run's export republishes it (saved_views).
            save_view(self.server.graph_files_dir, slug, q_params)
            write_text_atomically(graph_path, graph_text(graph, q_params))
        answer = {"saved": True, **self._score_subgraph(slug, q_params)}
        self._send_bytes(json.dumps(answer).encode("utf-8"), "application/json")

    def _score_subgraph(self, slug: str, q_params: dict[str, Any]) -> dict[str, Any]:
        """``{"subgraph": scores}`` for a saved view that pins nodes, ``{"subgraph_error":
        line}`` when it cannot be scored (the view is saved either way), ``{}`` when nothing is
        pinned or this viewer has no score store."""
        store, artifacts_dir = self.server.store, self.server.artifacts_dir
        if store is None or artifacts_dir is None:
            return {}
        if not q_params.get("pinnedIds") and q_params.get("supernodes") in (None, "", "[]", []):
            return {}
        from tracerflow.errors import TracerflowError
        from tracerflow.storage.subgraphs import graph_of_slug

        try:
            graph_of_slug(store, slug)  # a graph the store lacks: said before torch is loaded
            from tracerflow.subgraphs import score_and_record  # torch: only when a Save scores

            with self.server.score_lock:
                record = score_and_record(
                    store, artifacts_dir, slug, q_params, f"the view saved for {slug}", "viewer"
                )
        except TracerflowError as error:
            return {"subgraph_error": str(error)}
        return {"subgraph": subgraph_answer(record)}

    def _content_length(self) -> int:
        raw = self.headers.get("Content-Length")
        if raw is None:
            raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "Content-Length required")
        try:
            length = int(raw)
        except ValueError as exc:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length") from exc
        if length < 0:
            raise BadRequest(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_SAVE_BYTES:
            raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request body too large")
        return length

    # --- responses ------------------------------------------------------------------------

    def _send_bytes(
        self,
        body: bytes,
        content_type: str | None,
        *,
        status: HTTPStatus = HTTPStatus.OK,
        head: bool = False,
        compress: bool = True,
    ) -> None:
        accepts_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
        gzipped = compress and len(body) > GZIP_THRESHOLD_BYTES and accepts_gzip
        if gzipped:
            body = gzip.compress(body, compresslevel=3)
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if gzipped:
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _send_error(self, status: HTTPStatus, message: str, *, head: bool = False) -> None:
        body = json.dumps({"error": message}).encode("utf-8")
        # The body of a refused request may be unread: do not reuse the connection.
        self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        if status == HTTPStatus.METHOD_NOT_ALLOWED:
            self.send_header("Allow", "GET, HEAD" if self.server.read_only else "GET, HEAD, POST")
        if status == HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE and self.unsatisfiable_size >= 0:
            self.send_header("Content-Range", f"bytes */{self.unsatisfiable_size}")
        self.end_headers()
        if not head:
            self.wfile.write(body)


def subgraph_answer(record: SubgraphRecord) -> dict[str, Any]:
    """What Save answers about the subgraph it scored: the four numbers and their counts."""
    return {
        "n_pinned_features": record.n_pinned_features,
        "n_selected_features": record.n_selected_features,
        "graph_replacement_score": record.graph_replacement_score,
        "graph_completeness_score": record.graph_completeness_score,
        "subgraph_replacement_score": record.subgraph_replacement_score,
        "subgraph_completeness_score": record.subgraph_completeness_score,
    }


def _request_path(raw: str) -> str:
    """The decoded path of a request target, or ``BadRequest`` if it may not be routed.

    Refuses what a file path could be tricked with, before any routing: ``..`` or ``.``
    segments (also percent-encoded), backslashes, NUL, and undecodable percent-encodings.
    """
    target = urlsplit(raw)
    path = target.path
    if not path.startswith("/"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad request target")
    try:
        decoded = unquote(path, errors="strict")
    except UnicodeDecodeError as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad percent-encoding") from exc
    if "\\" in decoded or "\x00" in decoded or "%" in decoded:
        # "%" left after decoding means double encoding (%252e): refuse rather than guess.
        raise BadRequest(HTTPStatus.BAD_REQUEST, "bad characters in path")
    if any(segment in (".", "..") for segment in decoded.split("/")):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "relative path segments")
    return decoded


def parse_byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte of a ``Range`` header over a file of ``size`` bytes.

    ``None`` means "send the whole file": no header, another unit, or several ranges. A
    ``bytes=`` range that is malformed (``bytes=5-2``, ``bytes=x``) or starts past the end
    raises ``RangeNotSatisfiable``. A last byte past the end is clamped (the frontend asks for
    one byte past a feature's record, and past the end for a layer's last feature).
    """
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if "," in spec:
        return None
    first_text, dash, last_text = spec.strip().partition("-")
    try:
        if not dash or not (first_text or last_text):
            raise ValueError(spec)
        if not first_text:  # a suffix: the last n bytes
            suffix = _range_number(last_text)
            if suffix == 0:
                raise ValueError(spec)
            return max(size - suffix, 0), size - 1
        first = _range_number(first_text)
        last = _range_number(last_text) if last_text else size - 1
    except ValueError as exc:
        raise RangeNotSatisfiable(size) from exc
    if last < first or first >= size:
        raise RangeNotSatisfiable(size)
    return first, min(last, size - 1)


def _range_number(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or len(text) > 19:
        raise ValueError(text)
    return int(text)


class RangeNotSatisfiable(BadRequest):
    """A ``Range`` the file cannot answer (416, with ``Content-Range: bytes */size``)."""

    def __init__(self, size: int) -> None:
        super().__init__(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, "range not satisfiable")
        self.size = size


def _parse_save_body(body: bytes) -> dict[str, Any]:
    """The ``qParams`` of a Save request: known keys; string, number, list or null values;
    strict JSON (no NaN or Infinity), at most ``MAX_SAVE_DEPTH`` levels deep."""
    try:
        data = json.loads(body, parse_constant=refuse_constant)
    except RecursionError as exc:  # the C parser gives up around a thousand levels
        raise BadRequest(HTTPStatus.BAD_REQUEST, "body nested too deeply") from exc
    except ValueError as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body is not strict JSON: {exc}") from exc
    try:
        check_depth_and_numbers(data, max_depth=MAX_SAVE_DEPTH)
    except ValueError as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"body refused: {exc}") from exc
    q_params = data.get("qParams") if isinstance(data, dict) else None
    if not isinstance(q_params, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, "body needs a qParams object")
    unknown = set(q_params) - SAVE_KEYS
    if unknown:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"unknown qParams keys: {sorted(unknown)}")
    for key, value in q_params.items():
        # The viewer sends null for every key not in its URL (and skips nulls when it loads).
        if value is not None and (
            not isinstance(value, str | list | int | float) or isinstance(value, bool)
        ):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"bad value for qParams.{key}")
    return q_params
