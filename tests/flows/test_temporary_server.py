"""The settings runs take on tracerflow's temporary Prefect server."""

from __future__ import annotations

import pytest
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
    get_current_settings,
    temporary_settings,
)

from tracerflow.flows.temporary_server import run_settings

API_URL = "http://127.0.0.1:4200/api"


def test_runs_on_the_temporary_server_send_no_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    assert get_current_settings().flows.heartbeat_frequency is not None  # Prefect's default: on
    settings = run_settings(API_URL)
    assert settings[PREFECT_API_URL] == API_URL
    with temporary_settings(updates=settings):
        assert get_current_settings().flows.heartbeat_frequency is None
        assert str(get_current_settings().api.url) == API_URL


def test_heartbeats_the_user_asked_for_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    assert PREFECT_FLOWS_HEARTBEAT_FREQUENCY not in run_settings(API_URL)
