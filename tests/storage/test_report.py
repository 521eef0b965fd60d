"""The history report: a real PNG, and an HTML file that renders offline in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tracerflow.storage.report import write_history_report

from .builders import OLD_CLT

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


def test_the_png_chart_is_a_real_png(populated_db: Path, tmp_path: Path) -> None:
    out = write_history_report(populated_db, tmp_path / "history.png", transcoder=OLD_CLT)

    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 10_000


def test_the_html_report_embeds_its_chart_and_tables(populated_db: Path, tmp_path: Path) -> None:
    out = write_history_report(populated_db, tmp_path / "report.html")

    text = out.read_text()
    assert 'src="data:image/png;base64,iVBORw0KGgo' in text  # base64 of the PNG signature
    assert text.count("<table>") == 2
    assert "http://" not in text and "https://" not in text  # nothing to fetch


@pytest.mark.browser
def test_the_html_report_renders_offline_in_headless_chromium(
    populated_db: Path, tmp_path: Path
) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    report = write_history_report(populated_db, tmp_path / "report.html")
    ARTIFACTS.mkdir(exist_ok=True)
    screenshot = ARTIFACTS / "storage-history-report.png"
    requested: list[str] = []

    with sync_api.sync_playwright() as playwright:
        # Playwright owns --user-data-dir: a persistent context is how a profile dir is given.
        browser = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=chromium,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.goto(report.as_uri())
            chart_width = page.eval_on_selector("img", "img => img.naturalWidth")
            table_rows = page.eval_on_selector_all("table tbody tr", "rows => rows.length")
            page.screenshot(path=str(screenshot), full_page=False)
        finally:
            browser.close()

    assert chart_width > 500  # the embedded PNG decoded
    assert table_rows > 10
    assert all(url.startswith(("file://", "data:")) for url in requested)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
