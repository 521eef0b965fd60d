"""`tracerflow convert` and `tracerflow inspect`, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from tracerflow.cli import app
from tracerflow.transcoders.synthetic import random_checkpoint

runner = CliRunner()


def test_convert_then_inspect_both_folders(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "ckpt", kind="plt", standardizer="layerwise")

    converted = runner.invoke(app, ["convert", str(checkpoint), str(tmp_path / "out")])
    assert converted.exit_code == 0, converted.output
    assert "kind" in converted.output and "plt" in converted.output

    source = runner.invoke(app, ["inspect", str(checkpoint), "--format", "json"])
    fields = json.loads(source.output)
    assert fields["folded"] is False and fields["input_standardizer"] == "layerwise"
    assert fields["activation"] == "topk" and fields["k"] == 4

    result = runner.invoke(app, ["inspect", str(tmp_path / "out"), "--format", "json"])
    fields = json.loads(result.output)
    assert fields["kind"] == "plt" and fields["files"] == 2 and fields["dtype"] == "float32"


def test_bad_input_is_one_line_and_exit_2_without_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "convert", str(tmp_path / "no"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'no'}: checkpoint folder does not exist"
    ]
    assert "Traceback" not in result.stdout + result.stderr


def test_a_binary_config_is_one_line_too(tmp_path):
    checkpoint = random_checkpoint(tmp_path / "ckpt")
    (checkpoint / "config.yaml").write_bytes(bytes(range(256)))
    result = subprocess.run(
        [sys.executable, "-m", "tracerflow.cli", "convert", str(checkpoint), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "config.yaml: not UTF-8 text" in lines[0], lines
    assert "Traceback" not in result.stdout + result.stderr
