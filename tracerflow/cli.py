"""The ``tracerflow`` command line.

Each area of the package contributes its commands through a ``register(app)`` function; this
module only wires them and turns tracerflow's own errors into one line and a non-zero exit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from tracerflow import operate_cli, presets_cli
from tracerflow.errors import TracerflowError
from tracerflow.flows import cli as flows_cli
from tracerflow.storage import cli as storage_cli
from tracerflow.viewer import cli as viewer_cli


class _Group(TyperGroup):
    """Report a ``TracerflowError`` as one ``error: <message>`` line, no traceback; exit 1, or the
    error's own ``exit_code`` (2 for a bad run input)."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except TracerflowError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(getattr(error, "exit_code", 1)) from None


app = typer.Typer(
    cls=_Group,
    help="Score sparse transcoders with circuit-tracer; keep every score; browse every graph.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


flows_cli.register(app)
storage_cli.register(app)
operate_cli.register(app)
presets_cli.register(app)
viewer_cli.register(app)


@app.command()
def convert(
    source: Annotated[Path, typer.Argument(help="crosslayer-transcoder checkpoint folder")],
    out: Annotated[Path, typer.Argument(help="output folder (must not exist)")],
    dtype: Annotated[str, typer.Option(help="float32, float16 or bfloat16")] = "float32",
) -> None:
    """Convert a crosslayer-transcoder checkpoint to circuit-tracer's files, exactly."""
    from tracerflow.transcoders import convert as convert_checkpoint
    from tracerflow.transcoders.conversion import parse_dtype

    out_dir = convert_checkpoint(source, out, dtype=parse_dtype(dtype))
    typer.echo(f"converted {source} -> {out_dir}")
    _print_fields(describe_folder(out_dir))


@app.command()
def inspect(
    path: Annotated[Path, typer.Argument(help="a checkpoint folder or a converted folder")],
    format: Annotated[str, typer.Option(help="table or json")] = "table",
) -> None:
    """Describe a checkpoint or converted folder: kind, layers, features, activation, sizes."""
    fields = describe_folder(path)
    if format == "json":
        typer.echo(json.dumps(fields, indent=2))
    else:
        _print_fields(fields)


def describe_folder(path: Path) -> dict[str, Any]:
    """What ``inspect`` shows, for either kind of folder."""
    from tracerflow.transcoders import read_checkpoint, read_manifest
    from tracerflow.transcoders.manifest import MANIFEST_FILE

    path = Path(path)
    files = list(path.glob("*.safetensors")) if path.is_dir() else []
    size = sum(p.stat().st_size for p in files)
    largest = max((p.stat().st_size for p in files), default=0)
    if (path / MANIFEST_FILE).is_file():
        manifest = read_manifest(path)
        return {
            "path": str(path),
            "format": "circuit-tracer (converted by tracerflow)",
            "kind": manifest.kind,
            "n_layers": manifest.n_layers,
            "d_model": manifest.d_model,
            "d_features": manifest.d_features,
            "activation": manifest.activation.name,
            "k": manifest.activation.k,
            "source_activation": manifest.activation.source,
            "source_was_folded": manifest.source_was_folded,
            "dtype": manifest.dtype,
            "files": len(files),
            "size_bytes": size,
            "largest_file_bytes": largest,
            "content_hash": manifest.content_hash,
        }
    checkpoint = read_checkpoint(path)
    largest_tensor = max(checkpoint.tensor_shapes.items(), key=lambda item: math.prod(item[1]))
    return {
        "path": str(path),
        "format": "crosslayer-transcoder checkpoint",
        "kind": checkpoint.kind,
        "n_layers": checkpoint.n_layers,
        "d_model": checkpoint.d_model,
        "d_features": checkpoint.d_features,
        "activation": checkpoint.activation.name,
        "k": checkpoint.activation.k,
        "source_activation": checkpoint.activation.source,
        "folded": checkpoint.is_folded,
        "input_standardizer": checkpoint.input_standardizer.kind,
        "output_standardizer": checkpoint.output_standardizer.kind,
        "dtype": checkpoint.tensor_dtype,
        "size_bytes": checkpoint.size_bytes(),
        "largest_tensor": f"{largest_tensor[0]} {list(largest_tensor[1])}",
    }


def _print_fields(fields: dict[str, Any]) -> None:
    width = max(len(name) for name in fields)
    for name, value in fields.items():
        typer.echo(f"{name:<{width}}  {value}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
