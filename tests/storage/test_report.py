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


def _history_rows() -> list[dict[str, object]]:
    """Two runs of one suite; within each, the transcoders' scores recorded minutes apart."""
    from datetime import UTC, datetime, timedelta

    rows = []
    for run, started in (("run-1", datetime(2025, 6, 1, 2, 0, tzinfo=UTC)),
                         ("run-2", datetime(2025, 6, 2, 2, 0, tzinfo=UTC))):  # fmt: skip
        for offset, source in enumerate(("toy-clt", "toy-plt")):
            rows.append(
                {
                    "flow_run_id": run,
                    "run_started_at": started,
                    "created_at": started + timedelta(minutes=7 * (offset + 1)),
                    "transcoder_source": source,
                    "suite_name": "toy-nightly",
                    "status": "ok",
                    "replacement_score": 0.8 + offset / 10,
                    "completeness_score": 0.9 + offset / 20,
                }
            )
    return rows


def test_each_history_panel_names_its_score_not_the_last_transcoder() -> None:
    from tracerflow.storage.report import history_figure

    figure = history_figure(_history_rows())

    labels = [ax.get_ylabel() for ax in figure.axes]
    assert labels == ["mean replacement score", "mean completeness"]


def test_history_time_ticks_show_dates_and_times() -> None:
    from datetime import datetime

    from tracerflow.storage.report import history_figure

    figure = history_figure(_history_rows())
    figure.canvas.draw()
    ticks = [t.get_text() for t in figure.axes[-1].get_xticklabels() if t.get_text()]

    assert ticks
    for tick in ticks:  # e.g. "2025-06-01 12:00", never "19:43.000000"
        datetime.strptime(tick, "%Y-%m-%d %H:%M")


def test_every_transcoder_of_one_run_is_drawn_at_the_run_s_time() -> None:
    from matplotlib.dates import date2num

    from tracerflow.storage.report import history_figure

    rows = _history_rows()
    figure = history_figure(rows)
    run_times = sorted({date2num(row["run_started_at"]) for row in rows})
    for ax in figure.axes:
        lines = ax.get_lines()
        assert len(lines) == 2  # toy-clt and toy-plt
        for line in lines:
            assert list(line.get_xdata(orig=False)) == pytest.approx(run_times)


def test_the_metrics_chart_draws_per_layer_fvu_l0_and_density(tmp_path: Path) -> None:
    from tracerflow.storage.report import metrics_figure

    rows = [
        {"transcoder_source": source, "model_name": "toy-gpt2", "corpus_name": "/x/held.txt",
         "layer": layer, "fvu": 0.1 * (layer + 1), "l0": 12.0,
         "density_histogram": [0] * 20 + [layer + 1] + [0] * 7}
        for source in ("toy-clt", "toy-plt") for layer in range(3)
    ]  # fmt: skip
    figure = metrics_figure(rows)

    fvu_ax, l0_ax, density_ax = figure.axes
    assert [fvu_ax.get_ylabel(), density_ax.get_xlabel().split(" (")[0]] == [
        "FVU",
        "log10 feature density",
    ]
    assert list(fvu_ax.get_lines()[0].get_ydata()) == pytest.approx([0.1, 0.2, 0.3])
    assert list(l0_ax.get_lines()[0].get_xdata()) == [0, 1, 2]
    assert max(density_ax.get_lines()[0].get_ydata()) == 6  # 1 + 2 + 3 over the layers


def test_the_report_clips_a_score_interval_to_the_range_a_score_can_take() -> None:
    # Two spread prompts: the t interval of the mean reaches past 1, which no score can.
    from tracerflow.storage.report import clipped_to_score_range

    row = {
        "transcoder_source": "toy-clt",
        "replacement_mean": 0.9,
        "replacement_ci_low": 0.7977,
        "replacement_ci_high": 1.0023,
        "completeness_ci_low": -0.05,
        "completeness_ci_high": None,  # one prompt: no interval
    }
    assert clipped_to_score_range(row) == {
        **row,
        "replacement_ci_high": 1.0,
        "completeness_ci_low": 0.0,
    }
