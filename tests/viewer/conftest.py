"""Fixtures for the viewer tests: real graph files from a tiny model, scores recorded by the
real storage writer, a home after ``tracerflow demo``, a running viewer and an offline browser.

The tiny-model graphs are built once per session (``toy_graphs.py``); ``demo_home`` runs the
real ``tracerflow demo`` once per session on the package's toy preset. The viewer runs as the
real ``tracerflow view`` command in a subprocess on a free port; ``page`` is headless Chromium
with every request beyond 127.0.0.1 aborted and recorded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import duckdb
import pytest

from tests.storage import builders
from tests.viewer import toy_graphs
from tracerflow.storage import ModelInfo, ScoreRecord
from tracerflow.viewer.features import display_token

REPO_ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS_DIR = REPO_ROOT / "test-artifacts"

# slug -> (transcoder kind, prompt, layer-0 boost). The boosted graph has colliding node ids
# when exported by circuit-tracer's create_graph_files.
GRAPH_SPECS: dict[str, tuple[str, str, float]] = {
    "toy-clt-ioi": ("clt", "Mary and John went to the store, John gave a drink to", 0.0),
    "toy-plt-cat": ("plt", "The cat sat on the mat. The dog sat on the", 0.0),
    "toy-clt-collide": ("clt", "Mary and John went to the store, John gave a drink to", 1.0),
}
TOY_MODEL_NAME = "toy-2l-d64"
TOY_MODEL = ModelInfo(
    name=TOY_MODEL_NAME,
    n_layers=toy_graphs.N_LAYERS,
    d_model=toy_graphs.D_MODEL,
    d_vocab=300,
    n_ctx=64,
)
# The transcoder sources the score database names (the graph files name the scan, "toy-clt").
TOY_TRANSCODER_SOURCES = {"clt": "./checkpoints/toy-clt", "plt": "./checkpoints/toy-plt"}
# `python -m tracerflow.cli`: what the `tracerflow` script runs.
TRACERFLOW_COMMAND = [sys.executable, "-m", "tracerflow.cli"]


@dataclass(frozen=True)
class ToyGraphs:
    """Attribution graphs (``circuit_tracer.Graph``) by slug, and the tokenizer they use."""

    graphs: dict[str, Any]
    tokenizer_dir: Path


@pytest.fixture(scope="session")
def toy_graphs_built(tmp_path_factory: pytest.TempPathFactory) -> ToyGraphs:
    return _build_graphs(tmp_path_factory.mktemp("toy-tokenizer"))


def _build_graphs(tokenizer_dir: Path) -> ToyGraphs:
    toy_graphs.build_tokenizer(tokenizer_dir)
    graphs = {}
    for slug, (kind, prompt, boost) in GRAPH_SPECS.items():
        model = toy_graphs.build_replacement_model(tokenizer_dir, kind, layer0_boost=boost)  # type: ignore[arg-type]
        graphs[slug] = toy_graphs.attribute(model, prompt)
    return ToyGraphs(graphs=graphs, tokenizer_dir=tokenizer_dir)


@pytest.fixture(scope="session")
def session_graph_files_dir(
    toy_graphs_built: ToyGraphs, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A graph-files folder with every toy graph, exported with ``write_graph_files``.

    Shared by the session: tests that change files use ``graph_files_dir`` (a copy).
    """
    from tracerflow.viewer.graph_ids import write_graph_files

    graph_files_dir = tmp_path_factory.mktemp("home") / "graph-files"
    for slug, graph in toy_graphs_built.graphs.items():
        write_graph_files(
            graph,
            slug,
            graph_files_dir,
            scan=graph.scan or "toy",
            extra_metadata={"model": TOY_MODEL_NAME},
        )
    return graph_files_dir


@pytest.fixture
def graph_files_dir(session_graph_files_dir: Path, tmp_path: Path) -> Path:
    """A private copy of the session's graph-files folder (under ``tmp_path/home``)."""
    copy = tmp_path / "home" / "graph-files"
    shutil.copytree(session_graph_files_dir, copy)
    return copy


def toy_score(
    slug: str, replacement: float, completeness: float, created_at: dt.datetime
) -> ScoreRecord:
    """The score of graph ``slug`` (a ``GRAPH_SPECS`` key), as a flow would record it."""
    kind, prompt, _ = GRAPH_SPECS[slug]
    return builders.score(
        builders.transcoder(TOY_TRANSCODER_SOURCES[kind], kind),
        prompt,
        replacement,
        completeness,
        created_at=created_at,
        slug=slug,
        model=TOY_MODEL,
    )


def snapshot_files(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root``, by relative path: to prove nothing was touched."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@dataclass
class RunningViewer:
    url: str
    process: subprocess.Popen[str]
    output: list[str]


VIEWER_URL = re.compile(r"Viewer: (http://\S+)")


def _interruptible() -> None:
    """Give the viewer Ctrl-C even where the suite runs with SIGINT ignored (a background job
    of a shell, ``nohup``): an ignored SIGINT is inherited, Python then installs no
    KeyboardInterrupt, and every stop below would wait its 10 s out and kill."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def run_viewer(
    graph_files_dir: Path,
    *extra_args: str,
    db_path: Path | None = None,
    pass_graph_dir: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[RunningViewer]:
    """Run ``tracerflow view`` in a subprocess on a free port; stop it after.

    Without ``pass_graph_dir`` the command finds the folder through ``$TRACERFLOW_HOME``
    (``graph_files_dir`` must then be ``<home>/graph-files``) or the ``env`` given. Without
    ``db_path`` the score database is a file that does not exist, unless ``env`` names the
    store (``TRACERFLOW_STORE``). ``env`` is applied last: another host's home and settings.
    """
    db_args = ["--db", str(db_path)] if db_path else ["--db", str(graph_files_dir / "none.duckdb")]
    if db_path is None and "TRACERFLOW_STORE" in (env or {}):
        db_args = []
    command = [
        *TRACERFLOW_COMMAND,
        "view",
        "--port",
        "0",
        *(["--graph-dir", str(graph_files_dir)] if pass_graph_dir else []),
        *db_args,
        *extra_args,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO_ROOT),
        "TRACERFLOW_HOME": str(graph_files_dir.parent),
        "PYTHONUNBUFFERED": "1",
        **(env or {}),
    }
    process = subprocess.Popen(
        command,
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_interruptible,
    )
    output: list[str] = []
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            output.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        url = None
        while url is None:
            line = lines.get(timeout=60)
            if line is None:
                raise RuntimeError("viewer exited before serving:\n" + "".join(output))
            match = VIEWER_URL.search(line)
            if match:
                url = match.group(1)
        yield RunningViewer(url=url, process=process, output=output)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def demo_viewer(demo_home: Path) -> Iterator[RunningViewer]:
    """``tracerflow view`` on the demo's home, found through ``$TRACERFLOW_HOME``."""
    with run_viewer(
        demo_home / "graph-files", db_path=demo_home / "scores.duckdb", pass_graph_dir=False
    ) as viewer:
        yield viewer


@dataclass(frozen=True)
class DemoScore:
    """One demo graph as the score database records it."""

    slug: str
    transcoder: str
    prompt: str
    replacement_score: float
    completeness_score: float


@pytest.fixture(scope="session")
def demo_scores(demo_home: Path) -> dict[str, DemoScore]:
    """The demo's successful scores by slug, read straight from ``scores_wide``."""
    with duckdb.connect(str(demo_home / "scores.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT slug, transcoder_source, prompt, replacement_score, completeness_score "
            "FROM scores_wide WHERE status = 'ok' ORDER BY slug"
        ).fetchall()
    return {row[0]: DemoScore(*row) for row in rows}


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS_DIR.mkdir(exist_ok=True)
    return ARTIFACTS_DIR


# Headless Chromium, offline: the browser tests' page records what it would have fetched.

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if CHROMIUM is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install -y chromium)")
    with sync_api.sync_playwright() as playwright:
        # Never `playwright install`: use the system chromium. Playwright gives each launch a
        # fresh temporary profile (it refuses --user-data-dir here).
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


class Page:
    """A page whose requests off 127.0.0.1 are aborted and recorded, as are console errors."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.outside_requests: list[str] = []
        self.console_errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page = self.context.new_page()
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.console_errors.append(str(error)))

    def _route(self, route: Any) -> None:
        if urlsplit(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            self.outside_requests.append(route.request.url)
            route.abort()

    def _console(self, message: Any) -> None:
        if message.type in ("error", "warning"):
            self.console_errors.append(f"{message.type}: {message.text}")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser)
    yield opened
    opened.close()


@contextlib.contextmanager
def serve_in_thread(graph_files_dir: Path) -> Iterator[Any]:
    """The real viewer server (``make_server``) on a free loopback port, in a thread."""
    from tracerflow.viewer.server import make_server

    server = make_server(graph_files_dir, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def check_clicked_feature_panels(
    page: Page, records: dict[int, dict[str, Any]], screenshots: list[Path]
) -> None:
    """On an open graph page, click one drawn feature node per screenshot path (features with a
    record in ``records``, by feature id): each panel must show the feature's top logits and its
    top example with the max-activating token marked and coloured, as the record has them."""
    from playwright.sync_api import expect

    page.page.wait_for_selector(".link-graph text.node", timeout=30_000)
    glyphs = page.page.locator(".link-graph text.node")
    drawn: list[list[Any]] = glyphs.evaluate_all(
        "glyphs => glyphs.map(g => [g.__data__.feature_type, g.__data__.featureIndex])"
    )
    feature_glyphs = [
        (i, feature_id)
        for i, (kind, feature_id) in enumerate(drawn)
        if kind == "cross layer transcoder" and feature_id in records
    ]
    assert len(feature_glyphs) >= len(screenshots)
    for (glyph, feature_id), screenshot in zip(feature_glyphs, screenshots, strict=False):
        record = records[feature_id]
        glyphs.nth(glyph).click(force=True)
        panel = page.page.locator(".feature-detail")
        # The panel shows the clicked feature once its title reads L<layer>/<index>.
        layer, index = record["layer"], record["index"]
        title = panel.locator(".feature-title", has_text=f"L{layer}/{index}")
        title.wait_for(timeout=15_000)
        top_row = panel.locator(".feature-example-logits .ctx-container").first
        # Waits (a debounce and a fetch) until the tokens read as the pack's top logits.
        expected_logits = [display_token(token) for token in record["top_logits"]]
        expect(top_row.locator("span.token")).to_have_text(expected_logits, timeout=15_000)
        titles = panel.locator(".feature-example-list .quantile-title").all_text_contents()
        assert titles[0].strip() == "Top activations"
        first_example = panel.locator(".feature-example-list .ctx-container").first
        text = "".join(first_example.locator("span.token").all_text_contents())
        expected = record["examples_quantiles"][0]["examples"][0]
        assert text == display_token("".join(expected["tokens"]))
        # The max-activating token is marked and coloured.
        marked = first_example.locator("span.token.train_token_ind")
        assert marked.count() == 1
        assert marked.evaluate("el => el.style.background") != ""
        page.page.screenshot(path=str(screenshot))
