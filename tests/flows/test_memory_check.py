"""The run's door refuses, in one line, a run whose estimated peak memory does not fit."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tracerflow.cli import app
from tracerflow.errors import UsageError
from tracerflow.flows.validation import check_memory, run_memory_needs
from tracerflow.memory import size_text
from tracerflow.parameters import run_request
from tracerflow.presets import builtin_prompts


def toy_request(**options: object):
    return run_request(transcoders=["toy-clt"], prompts=builtin_prompts(), **options)


def test_a_run_that_fits_passes() -> None:
    request = toy_request()
    needs = run_memory_needs("toy-clt", request)
    assert needs is not None

    check_memory(request, available_bytes=needs.estimate.total_bytes)


def test_a_run_that_cannot_fit_is_refused_naming_need_available_and_a_setting_that_fits() -> None:
    request = toy_request(device="cpu")
    needs = run_memory_needs("toy-clt", request)
    assert needs is not None
    available = needs.estimate.total_bytes - 1

    with pytest.raises(UsageError) as refused:
        check_memory(request, available_bytes=available)

    line = str(refused.value)
    assert "\n" not in line
    assert line.startswith("this run needs about ")
    assert f"{size_text(available)} is available" in line
    assert "this would fit: --max-feature-nodes " in line


def test_a_run_nothing_can_rescue_says_so() -> None:
    with pytest.raises(UsageError, match="no --max-feature-nodes or --offload fits"):
        check_memory(toy_request(device="cpu"), available_bytes=2**20)


def test_the_command_line_refuses_it_in_one_line_before_anything_is_written(
    tmp_path: Path,
) -> None:
    environment = {"TRACERFLOW_HOME": str(tmp_path / "home"), "TRACERFLOW_MEMORY_LIMIT": "1MiB"}
    arguments = ["run", "--preset", "toy-clt", "--device", "cpu"]

    result = CliRunner().invoke(app, arguments, env=environment)

    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: this run needs about "), result.stderr
    assert "but 1 MiB is available" in lines[0]
    assert not (tmp_path / "home" / "scores.duckdb").exists()
    assert not (tmp_path / "home" / "artifacts").exists()


def test_a_memory_limit_of_off_skips_the_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACERFLOW_MEMORY_LIMIT", "off")

    check_memory(toy_request(device="cpu"))  # no estimate compared: nothing raised


def test_on_cuda_the_weights_must_fit_in_the_gpus_free_memory() -> None:
    request = toy_request(device="cuda")

    with pytest.raises(UsageError, match=r"weights alone take about .* but cuda has 1 MiB free"):
        check_memory(request, available_bytes=2**20)
    check_memory(request, available_bytes=2**30)  # the toy's weights: well under a GiB
