"""Settings read from the environment: where the viewer's folder is."""

from __future__ import annotations

from pathlib import Path

import pytest

from tracerflow.settings import get_settings


def test_the_graph_files_folder_is_the_homes_without_a_publish_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACERFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRACERFLOW_PUBLISH_ROOT", raising=False)
    assert get_settings().graph_files_dir == tmp_path / "home" / "graph-files"


def test_a_publish_root_is_the_graph_files_folder_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRACERFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TRACERFLOW_ARTIFACT_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRACERFLOW_PUBLISH_ROOT", "shared/published")
    settings = get_settings()
    assert settings.graph_files_dir == tmp_path / "shared" / "published"
    # The artifact store stays where it was: publishing is its own setting.
    assert settings.artifacts_dir == tmp_path / "home" / "artifacts"
