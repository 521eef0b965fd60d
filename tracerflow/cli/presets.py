"""``tracerflow presets``: the known presets, as a table or json."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from tracerflow.cli.render import text_table
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


def presets_command(
    output_format: Annotated[
        OutputFormat,
        typer.Option("--format", help="table for people, json for scripts"),
    ] = OutputFormat.table,
) -> None:
    """List the presets: model, transcoder, kind and attribution defaults."""
    presets = list_presets()
    if output_format is OutputFormat.json:
        typer.echo(json.dumps([preset.model_dump() for preset in presets], indent=2))
        return
    typer.echo(
        text_table(
            [column.replace("_", " ") for column in _COLUMNS],
            [[str(getattr(preset, column)) for column in _COLUMNS] for preset in presets],
        )
    )
