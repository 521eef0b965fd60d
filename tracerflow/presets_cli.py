"""``tracerflow presets``: list the known presets (mounted on the main app by ``register``)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer

from tracerflow.presets import list_presets


class OutputFormat(StrEnum):
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
    rows = [[str(getattr(preset, column)) for column in _COLUMNS] for preset in presets]
    headers = [column.replace("_", " ") for column in _COLUMNS]
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [headers, *rows]:
        cells = (cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        typer.echo("  ".join(cells).rstrip())


def register(app: typer.Typer) -> None:
    """Add the ``presets`` command to ``app``."""
    app.command("presets")(presets_command)
