"""One circuit-tracer version rule (exact 0.5.0), read by attribution and by the loader alike."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import tracerflow.compat as compat
from tracerflow.attribution import fast_path_unavailable
from tracerflow.errors import CheckpointError
from tracerflow.tasks.download import resolve_source
from tracerflow.transcoders import convert, load_converted

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_the_validated_release_is_the_one_pyproject_pins() -> None:
    dependencies = tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]
    (pin,) = [d for d in dependencies if d.startswith("circuit-tracer")]

    assert re.fullmatch(r"circuit-tracer==([\w.]+)", pin)[1] == compat.VALIDATED_CIRCUIT_TRACER
    assert compat.circuit_tracer_mismatch() is None  # and it is what is installed here


@pytest.mark.parametrize("installed", ["0.5.1", "0.5.0rc1", "0.5", "0.6.0", "0.4.9"])
def test_any_other_release_is_a_mismatch_naming_both(installed: str) -> None:
    reason = compat.circuit_tracer_mismatch(installed)

    assert reason is not None
    assert installed in reason and compat.VALIDATED_CIRCUIT_TRACER in reason


def test_the_validated_release_is_no_mismatch() -> None:
    assert compat.circuit_tracer_mismatch(compat.VALIDATED_CIRCUIT_TRACER) is None


def test_one_constant_governs_both_the_loader_and_the_attribution(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted = convert(resolve_source("toy-clt").path, tmp_path / "converted")
    model_stand_in = object()  # the version check comes before any look at the model
    monkeypatch.setattr(compat, "VALIDATED_CIRCUIT_TRACER", "0.5.1")

    with pytest.raises(CheckpointError, match=r"circuit-tracer 0\.5\.0 is installed.*0\.5\.1"):
        load_converted(converted, device="cpu")
    assert "0.5.1" in (fast_path_unavailable(model_stand_in) or "")
