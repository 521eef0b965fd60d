"""One typed settings object, read from the environment (``TRACERFLOW_*``) and CLI flags.

Everything tracerflow writes lives under ``home`` (``$TRACERFLOW_HOME``, default ``~/.tracerflow``):
the artifact store, the viewer's graph files, the score database and Prefect's own home. Each
field says what it sets.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tracerflow.parameters import MAX_THREADS

if TYPE_CHECKING:
    from tracerflow.storage.store import Store


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TRACERFLOW_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path("~/.tracerflow").expanduser())
    # $TRACERFLOW_THREADS: torch's intra-op threads for attribution (and the scoring and export
    # of its graph) when a run passes no --threads; unset, torch's default for the machine. A
    # setting, never chosen by timing: results at one count are reproducible bit for bit.
    threads: int | None = Field(default=None, ge=1, le=MAX_THREADS)
    # $TRACERFLOW_ALLOW_OUTSIDE_PATHS=1 lets a suite's prompts_file name a file outside the
    # suite file's folder: the person running tracerflow grants it, never the suite's author.
    allow_outside_paths: bool = False
    # $TRACERFLOW_CUDA_FAST_PATH=1 lets attribution on CUDA take tracerflow's fast path, which
    # has not been validated on a GPU yet; unset, CUDA runs circuit-tracer's own attribution.
    cuda_fast_path: bool = False
    # $TRACERFLOW_MEMORY_LIMIT: the memory a run may use, checked at its door against its
    # estimated peak (tracerflow/memory.py), e.g. 8GiB or 12G; unset, the memory available now
    # (the CPU's, within the container's limit; the GPU's free memory on CUDA). "off" skips it.
    memory_limit: str | None = None
    # $TRACERFLOW_SERVER_LINGER_S: how long the temporary Prefect server a run started stays up
    # after the run, unused, for the next run in this home to reuse (its start is seconds of
    # every run otherwise). 0: it stops with its run. A killed run's server never lingers.
    server_linger_s: float = Field(default=600.0, ge=0)
    # $TRACERFLOW_STORE: where the score history lives: a .duckdb file, or
    # ducklake:postgres:<libpq conninfo> for a team's DuckLake (docs/operations.md). Unset: the
    # embedded file $TRACERFLOW_HOME/scores.duckdb.
    store: str | None = None
    # $TRACERFLOW_LAKE_DATA_PATH: a lake's Parquet folder, mounted at the same path on every
    # machine. Needed to create a lake; unset, a lake's readers and writers use the folder its
    # catalog recorded when it was created.
    lake_data_path: Path | None = None
    # $TRACERFLOW_ARTIFACT_ROOT: the content-addressed stage outputs. A folder shared by workers
    # on several machines lets each reuse what another computed. Unset: $TRACERFLOW_HOME/artifacts.
    artifact_root: Path | None = None
    # $TRACERFLOW_PUBLISH_ROOT: where runs publish what the viewer shows (graph files,
    # graph-metadata.json, feature packs, saved views) and where `tracerflow view` reads it. A
    # folder shared by every worker and viewer host lets `view` anywhere show every graph. Its
    # own setting, not a folder of the artifact root: the root is a cache a team may clear and
    # share more widely; the published folder is a named gallery people save views into.
    # Unset: $TRACERFLOW_HOME/graph-files (docs/operations.md, "Every graph from every host").
    publish_root: Path | None = None

    @property
    def artifacts_dir(self) -> Path:
        """Content-addressed stage outputs: ``<artifact root>/<stage>/<key>/``."""
        return self.artifact_root or self.home / "artifacts"

    @property
    def graph_files_dir(self) -> Path:
        """The viewer's data folder: one JSON per graph plus ``graph-metadata.json`` and the
        feature packs under ``features/``; the publish root when one is set."""
        return self.publish_root or self.home / "graph-files"

    @property
    def database_path(self) -> Path:
        """The embedded score database, the default store."""
        return self.home / "scores.duckdb"

    @property
    def score_store(self) -> Store:
        """Where runs record their scores and readers read them (``$TRACERFLOW_STORE``)."""
        # Imported here: importing the storage package loads DuckDB, which reading a setting
        # (every command, every flow) does not need.
        from tracerflow.storage.store import parse_store

        return parse_store(self.store or self.database_path, self.lake_data_path)

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    @property
    def results_dir(self) -> Path:
        """Where Prefect persists task results (must be a Path, not a str)."""
        return self.home / "prefect-results"


def get_settings() -> Settings:
    """Read the settings now (not at import), so tests and the CLI can change the environment."""
    settings = Settings()
    settings.home = settings.home.expanduser().resolve()
    if settings.artifact_root is not None:
        settings.artifact_root = settings.artifact_root.expanduser().resolve()
    if settings.publish_root is not None:
        settings.publish_root = settings.publish_root.expanduser().resolve()
    return settings


def configure_prefect_defaults(settings: Settings | None = None) -> None:
    """Set the Prefect settings tracerflow needs, unless the user has set their own.

    Must run before ``prefect`` is imported for the first time in the process: Prefect reads
    its settings from the environment at import. Importing tracerflow never calls it; each entry
    point does, first: the CLI (``TracerflowGroup.invoke``, before any command runs, for
    ``tracerflow``, ``python -m tracerflow.cli`` and ``python -m tracerflow.viewer``),
    ``deployments/serve.py``, the deployments' entrypoint modules (``flows/suite.py``,
    ``flows/fan_out.py``), ``tests/conftest.py`` and the benchmarks that run flows.
    """
    settings = settings or get_settings()
    defaults = {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        # A temporary server on a loaded 2-core machine needs more than the default 20 s.
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_HOME": str(settings.prefect_home),
        "PREFECT_LOCAL_STORAGE_PATH": str(settings.results_dir),
        # The artifact store's warnings (a damaged folder recomputed) belong in the run's logs;
        # outside a run (the viewer, the CLI) tracerflow's logs stay on the console.
        "PREFECT_LOGGING_EXTRA_LOGGERS": "tracerflow",
        "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",
    }
    for name, value in defaults.items():
        os.environ.setdefault(name, value)
    if os.environ["PREFECT_HOME"] == str(settings.prefect_home):
        settings.prefect_home.mkdir(parents=True, exist_ok=True)  # Prefect creates one level only
