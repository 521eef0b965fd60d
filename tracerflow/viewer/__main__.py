"""``python -m tracerflow.viewer [view options]``: the viewer alone, without the rest of the
CLI; the same ``view`` command, and the same error handling, as ``tracerflow view``."""

from __future__ import annotations

import typer

from tracerflow.cli import TracerflowGroup
from tracerflow.cli.view import view

app = typer.Typer(
    cls=TracerflowGroup,
    add_completion=False,
    help="The tracerflow graph viewer.",
    pretty_exceptions_enable=False,
)


@app.callback()
def _main() -> None:
    """The tracerflow graph viewer."""
    # A callback keeps Typer in group mode, so the command is `view` as in the main CLI.


app.command("view")(view)

if __name__ == "__main__":
    app()
