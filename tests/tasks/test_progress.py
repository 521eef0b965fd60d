"""``ProgressArtifact``: the one progress reporter of attribute, evaluate and dashboards."""

from __future__ import annotations

import logging

import pytest

from tracerflow.tasks import progress as progress_module
from tracerflow.tasks.progress import ProgressArtifact


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """The Prefect API calls made, in order, with a clock that only moves when told."""
    made: list[tuple] = []

    def create(progress: float, key: str | None = None, description: str | None = None) -> str:
        made.append(("create", progress, key, description))
        return "artifact-id"

    def update(artifact_id: str, progress: float) -> None:
        made.append(("update", artifact_id, progress))

    monkeypatch.setattr(progress_module, "create_progress_artifact", create)
    monkeypatch.setattr(progress_module, "update_progress_artifact", update)
    return made


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    return now


def test_created_when_first_shown_then_updated_at_most_every_interval(calls, clock):
    artifact = ProgressArtifact("attribution of 3 prompts", key="k", every_seconds=2.0)
    assert not artifact.shown and calls == []
    assert artifact.show(10.0)
    assert artifact.shown
    clock[0] += 1.0
    assert not artifact.show(20.0)  # 1 s after the last: skipped
    assert artifact.show(30.0, now=True)  # unless asked for now
    clock[0] += 2.0
    assert artifact.show(40.0)
    assert calls == [
        ("create", 10.0, "k", "attribution of 3 prompts"),
        ("update", "artifact-id", 30.0),
        ("update", "artifact-id", 40.0),
    ]


def test_finish_shows_all_done_only_when_shown(calls, clock):
    never_shown = ProgressArtifact("nothing computed")
    never_shown.finish()
    assert calls == []
    artifact = ProgressArtifact("evaluation")
    artifact.show(0.0)
    artifact.finish()
    assert calls == [("create", 0.0, None, "evaluation"), ("update", "artifact-id", 100.0)]


def test_an_api_error_is_a_warning_not_a_failure(monkeypatch, caplog, clock):
    def refuse(*args, **kwargs):
        raise RuntimeError("the API is down")

    monkeypatch.setattr(progress_module, "create_progress_artifact", refuse)
    artifact = ProgressArtifact("dashboards of a scan")
    with caplog.at_level(logging.WARNING, logger="tracerflow"):
        assert artifact.show(50.0)
    assert not artifact.shown
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "dashboards of a scan" in warning and "the API is down" in warning
