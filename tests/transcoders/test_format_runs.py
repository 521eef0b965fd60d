"""``tracerflow run`` on a transcoder of each new format, as a user runs it: one run (one Prefect
flow, ~30 s) scores the toy presets beside the same transcoders in the other formats, and each
gives its preset's scores exactly (the same tensors, the same activation), recorded with its
format."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from tests.reliability.harness import run_cli
from tests.transcoders.foreign_formats import (
    circuit_tracer_config,
    circuit_tracer_folder,
    lightning_checkpoint,
)
from tracerflow import toy
from tracerflow.transcoders import convert

PROMPT = "Mary and John went to the store, John gave a drink to"


@pytest.mark.slow
def test_each_format_runs_and_scores_as_the_checkpoint_it_holds(
    prefect_api: None, tmp_path: Path
) -> None:
    folders = {
        # convert's own output: circuit-tracer files and tracerflow.json
        "converted": convert(toy.transcoder_dir("clt"), tmp_path / "converted"),
        # circuit-tracer's own writer, its config saying TopK (circuit-tracer 0.5.0 runs ReLU)
        "circuit-tracer": circuit_tracer_folder(
            toy.transcoder_dir("plt"),
            tmp_path / "circuit-tracer",
            circuit_tracer_config("plt", activation="topk", k=12, model_name="toy-gpt2"),
        ),
        "lightning": lightning_checkpoint(toy.transcoder_dir("clt"), tmp_path / "lightning"),
    }
    same_as = {"converted": "toy-clt", "circuit-tracer": "toy-plt", "lightning": "toy-clt"}
    arguments = ["--model", "toy-gpt2", "--prompt", PROMPT, "--transcoder", "toy-clt"]
    arguments += ["--transcoder", "toy-plt"]
    for folder in folders.values():
        arguments += ["--transcoder", str(folder)]
    home = tmp_path / "home"

    result = run_cli(arguments, home)

    assert result.returncode == 0, result.stdout + result.stderr
    with duckdb.connect(str(home / "scores.duckdb"), read_only=True) as con:
        rows = con.execute(
            "SELECT transcoder_source, transcoder_format, status, replacement_score, "
            "completeness_score, pruned_replacement_score, pruned_completeness_score "
            "FROM scores_wide"
        ).fetchall()
    by_source = {source: (fmt, status, tuple(scores)) for source, fmt, status, *scores in rows}
    assert {source: fmt for source, (fmt, _, _) in by_source.items()} == {
        "toy-clt": "crosslayer-transcoder",
        "toy-plt": "crosslayer-transcoder",
        str(folders["converted"]): "circuit-tracer",
        str(folders["circuit-tracer"]): "circuit-tracer",
        str(folders["lightning"]): "crosslayer-transcoder-lightning",
    }
    assert all(status == "ok" for _, status, _ in by_source.values())
    for name, folder in folders.items():
        assert by_source[str(folder)][2] == by_source[same_as[name]][2], name
