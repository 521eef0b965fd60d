"""Fixtures of the transcoder tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hub cache that ``huggingface_hub`` reads (offline: conftest sets it)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache
