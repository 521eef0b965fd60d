"""A run's log on the terminal and in a file: the terminal shows each line once and no traceback;
the file under ``$TRACERFLOW_HOME/logs/`` keeps everything, tracebacks included, and the run's
``error:`` line names it (issue 26: "one line after the door")."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

# Prefect's engine lines that say again what tracerflow's own log line or the run's final
# `error:` line says: a failed task or flow run's final state, and the exception it ended in.
_REPEATS = ("Finished in state Failed", "Encountered exception during execution")
_ENGINE_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
_FILE_FORMAT = "%(asctime)s | %(levelname)-7s | %(name)s - %(message)s"


class _WithoutTraceback(logging.Formatter):
    """``inner``'s format of a record, without its traceback or stack."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        bare = logging.makeLogRecord(record.__dict__)
        bare.exc_info, bare.exc_text, bare.stack_info = None, None, None
        return self.inner.format(bare)


class _NotRepeated(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(_ENGINE_LOGGERS):
            return True
        return not record.getMessage().startswith(_REPEATS)


def new_log_path(home: Path) -> Path:
    """A fresh file under ``home/logs/`` for one command's log."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return home / "logs" / f"run-{stamp}-{os.getpid()}.log"


@contextmanager
def terminal_and_file(path: Path) -> Iterator[Path]:
    """For the block: every record that reaches the root logger is also written whole to
    ``path``; the root's console handlers drop tracebacks and Prefect's repeats of a failure."""
    # Prefect's console handler is set up once per process (`prefect.main` does it at import,
    # later imports only adjust levels): set it up now, to wrap it.
    from prefect.logging.configuration import ensure_logging_setup

    ensure_logging_setup()
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    to_file = logging.FileHandler(path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter(_FILE_FORMAT))
    consoles = [  # a FileHandler is a StreamHandler too: a user's log file keeps everything
        h
        for h in root.handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]
    kept = [(h, h.formatter) for h in consoles]
    repeats = _NotRepeated()
    for handler in consoles:
        handler.setFormatter(_WithoutTraceback(handler.formatter or logging.Formatter()))
        handler.addFilter(repeats)
    root.addHandler(to_file)
    try:
        yield path
    finally:
        root.removeHandler(to_file)
        to_file.close()
        for handler, formatter in kept:
            handler.setFormatter(formatter)
            handler.removeFilter(repeats)
