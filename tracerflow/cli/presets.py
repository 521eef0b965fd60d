"""``tracerflow presets``: the known presets, as a table or json."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated

import typer

from tracerflow.cli.render import text_table
from tracerflow.presets import Preset, list_presets


class OutputFormat(StrEnum):
    """``--format`` of `presets`: a table for people, json for scripts."""

    table = "table"
    json = "json"


def size_text(n_bytes: int | None) -> str:
    """A byte count as people read it (``4.4 GB``); ``built in`` for 0, ``?`` when unknown."""
    if n_bytes is None:
        return "?"
    if n_bytes == 0:
        return "built in"
    if n_bytes < 1000:
        return f"{n_bytes} B"
    value, unit = n_bytes / 1000, "kB"
    for larger in ("MB", "GB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{value:.1f} {unit}"


# The table's columns: (header, the cell of a preset). A column is one line here.
_COLUMNS: tuple[tuple[str, Callable[[Preset], object]], ...] = (
    ("name", lambda preset: preset.name),
    ("model", lambda preset: preset.model),
    ("transcoder", lambda preset: preset.transcoder),
    ("kind", lambda preset: preset.kind),
    ("download", lambda preset: size_text(preset.download_bytes())),
    ("max n logits", lambda preset: preset.max_n_logits),
    ("desired logit prob", lambda preset: preset.desired_logit_prob),
    ("max feature nodes", lambda preset: preset.max_feature_nodes),
    ("batch size", lambda preset: preset.batch_size),
    ("node threshold", lambda preset: preset.node_threshold),
    ("edge threshold", lambda preset: preset.edge_threshold),
    ("memory", lambda preset: memory_text(preset_memory_bytes(preset.name))),
)


def presets_command(
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", help="table for people, json for scripts"),
    ] = OutputFormat.table,
) -> None:
    """List the presets: model, transcoder, kind and attribution defaults."""
    presets = list_presets()
    if output_format is OutputFormat.json:
        rows = [
            dict(
                preset.model_dump(),
                download_bytes=preset.download_bytes(),
                memory_bytes=preset_memory_bytes(preset.name),
            )
            for preset in presets
        ]
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(
        text_table(
            [header for header, _ in _COLUMNS],
            [[str(cell(preset)) for _, cell in _COLUMNS] for preset in presets],
        )
    )


def preset_memory_bytes(name: str) -> int | None:
    """The estimated peak memory of a CPU run of preset ``name`` on its prompts, as its run's
    door estimates it (``tracerflow.memory``); None where its shapes are not known before it
    runs (a model not in the Hugging Face cache, a transcoder without a feature count)."""
    from tracerflow.flows.validation import run_memory_needs
    from tracerflow.parameters import run_request
    from tracerflow.presets import builtin_prompts, find_preset

    preset = find_preset(name)
    prompts = list(preset.prompts) if preset is not None and preset.prompts else builtin_prompts()
    needs = run_memory_needs(name, run_request(transcoders=[name], prompts=prompts))
    return needs.estimate.total_bytes if needs is not None else None


def memory_text(n_bytes: int | None) -> str:
    """An estimate as the refusal says it (``2.9 GiB``); ``?`` when not known."""
    from tracerflow.memory import size_text as gib_text

    return gib_text(n_bytes) if n_bytes is not None else "?"
