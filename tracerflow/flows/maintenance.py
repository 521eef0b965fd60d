"""The maintenance flow: ``tracerflow store maintain`` on the configured store, as a Prefect
deployment (``deployments/prefect.yaml``: ``maintain-store/store-maintenance``, weekly), so a
team's lake is kept small by the same server and workers that fill it (docs/operations.md)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from tracerflow.settings import configure_prefect_defaults, get_settings
from tracerflow.storage.maintenance import DEFAULT_KEEP_DAYS, maintain

# An entrypoint a worker loads without the CLI (see suite.py).
configure_prefect_defaults()


@flow(name="maintain-store", log_prints=False)
def maintain_store_flow(keep_days: float = DEFAULT_KEEP_DAYS, force: bool = False) -> list[str]:
    """Maintain the store this worker records into (``$TRACERFLOW_STORE``): flush inlined rows,
    merge small files, expire snapshots older than ``keep_days`` but those that recorded a run
    (unless ``force``), delete unread files. Returns the report's lines, also logged and kept
    as the run's artifact."""
    report = maintain(get_settings().score_store, keep_days=keep_days, force=force)
    lines = report.lines(keep_days)
    logger = get_run_logger()
    for line in lines:
        logger.info(line)
    create_markdown_artifact(
        "\n".join(f"- {line}" for line in lines), key="store-maintenance", description=lines[0]
    )
    return lines
