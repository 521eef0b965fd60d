"""``tracerflow convert`` and ``tracerflow inspect``: turn a transcoder of any format tracerflow
reads into circuit-tracer's files, and describe a folder of any of those formats."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from tracerflow.cli.render import text_table


def convert(
    source: Annotated[
        Path,
        typer.Argument(
            help="transcoder folder: crosslayer-transcoder (config.yaml + checkpoint.safetensors "
            "or clt.ckpt) or circuit-tracer files"
        ),
    ],
    out: Annotated[Path, typer.Argument(help="output folder (must not exist)")],
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16")] = "float32",
) -> None:
    """Convert a transcoder of any format tracerflow reads to circuit-tracer's files, exactly."""
    from tracerflow.transcoders import convert as convert_checkpoint
    from tracerflow.transcoders.conversion import parse_dtype
    from tracerflow.transcoders.formats import describe_folder

    out_dir = convert_checkpoint(source, out, dtype=parse_dtype(dtype))
    typer.echo(f"converted {source} -> {out_dir}")
    typer.echo(_fields_table(describe_folder(out_dir)))


def inspect(
    path: Annotated[Path, typer.Argument(help="a transcoder folder of a format tracerflow reads")],
    format: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """Describe a transcoder folder: format, kind, layers, features, activation, sizes."""
    # Imported here, as in `convert`: reading checkpoints pulls in torch, which `--help` need not.
    from tracerflow.transcoders.formats import describe_folder

    fields = describe_folder(path)
    if format == "json":
        typer.echo(json.dumps(fields, indent=2))
    else:
        typer.echo(_fields_table(fields))


def _fields_table(fields: dict[str, Any]) -> str:
    return text_table(
        ["field", "value"], [[name, str(value)] for name, value in fields.items()], header=False
    )
