"""``tracerflow presets``: the known presets, as a table or json."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from tracerflow.cli.render import text_table
from tracerflow.memory import size_text
from tracerflow.presets import list_presets


class OutputFormat(StrEnum):
    """``--format`` of `presets`: a table for people, json for scripts."""

    table = "table"
    json = "json"


_COLUMNS = (
    "name",
    "model",
    "transcoder",
    "kind",
    "max_n_logits",
    "desired_logit_prob",
    "max_feature_nodes",
    "batch_size",
    "node_threshold",
    "edge_threshold",
)
# Beside each preset's fields: what its run needs (tracerflow.memory), on the built-in prompts.
_MEMORY_COLUMN = "memory"


def presets_command(
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", help="table for people, json for scripts"),
    ] = OutputFormat.table,
) -> None:
    """List the presets: model, transcoder, kind and attribution defaults."""
    presets = list_presets()
    memory = {preset.name: preset_memory_bytes(preset.name) for preset in presets}
    if output_format is OutputFormat.json:
        rows = [preset.model_dump() | {"memory_bytes": memory[preset.name]} for preset in presets]
        typer.echo(json.dumps(rows, indent=2))
        return
    typer.echo(
        text_table(
            [column.replace("_", " ") for column in _COLUMNS] + [_MEMORY_COLUMN],
            [
                [str(getattr(preset, column)) for column in _COLUMNS]
                + [size_text(memory[preset.name]) if memory[preset.name] is not None else "?"]
                for preset in presets
            ],
        )
    )


def preset_memory_bytes(name: str) -> int | None:
    """The estimated peak memory of a CPU run of preset ``name`` on the built-in prompts, as its
    run's door estimates it; None where its shapes are not known before the run."""
    from tracerflow.flows.validation import run_memory_needs
    from tracerflow.parameters import run_request
    from tracerflow.presets import builtin_prompts

    needs = run_memory_needs(name, run_request(transcoders=[name], prompts=builtin_prompts()))
    return needs.estimate.total_bytes if needs is not None else None
