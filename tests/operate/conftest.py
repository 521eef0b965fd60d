"""A real Prefect server on 127.0.0.1 (a free port), started by `tracerflow server up`."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from tracerflow import server
from tracerflow.settings import Settings


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Start a server for this module's tests; yield the environment a worker needs."""
    home = tmp_path_factory.mktemp("operate-home")
    settings = Settings(home=home)
    started = server.up(settings, port=free_port(), timeout=180)
    assert started.healthy and started.api_url
    env = {
        **os.environ,
        "TRACERFLOW_HOME": str(home),
        "PREFECT_API_URL": started.api_url,
        "PREFECT_HOME": str(home / "prefect-client"),
    }
    try:
        yield env
    finally:
        server.down(settings)


@pytest.fixture
def api_url(prefect_server: dict[str, str]) -> str:
    return prefect_server["PREFECT_API_URL"]


def home_of(env: dict[str, str]) -> Path:
    return Path(env["TRACERFLOW_HOME"])
