"""A run's log: the terminal without tracebacks or Prefect's repeats of a failure, the file under
the home with everything; a user's own log file keeps everything too."""

from __future__ import annotations

import io
import logging
from pathlib import Path

from prefect.logging.configuration import ensure_logging_setup

from tracerflow.cli.run_log import terminal_and_file


def test_the_terminal_drops_tracebacks_and_repeats_and_every_file_keeps_them(tmp_path: Path):
    ensure_logging_setup()  # Prefect's logging, which a run sets up before anything logs
    root = logging.getLogger()
    terminal = io.StringIO()
    console = logging.StreamHandler(terminal)
    users_file = logging.FileHandler(tmp_path / "mine.log")
    for handler in (console, users_file):
        root.addHandler(handler)
    try:
        with terminal_and_file(tmp_path / "logs" / "run.log") as run_log:
            try:
                raise ValueError("boom")
            except ValueError:
                logging.getLogger("a.library").error("the download failed", exc_info=True)
            logging.getLogger("prefect.task_runs").error("Finished in state Failed('boom')")
        logging.getLogger("a.library").error("after", exc_info=(ValueError, ValueError("x"), None))
    finally:
        for handler in (console, users_file):
            root.removeHandler(handler)
        users_file.close()

    shown = terminal.getvalue()
    during = shown.split("after")[0]
    assert "the download failed" in during and "Traceback" not in during
    assert "Finished in state Failed" not in during  # said by the run's own lines already
    assert "ValueError: x" in shown.split("after")[1]  # the console is itself again after
    for kept in (run_log.read_text(), (tmp_path / "mine.log").read_text()):
        assert "Traceback" in kept and "ValueError: boom" in kept
        assert "Finished in state Failed" in kept
