"""``python -m tracerflow.viewer [view options]``: the viewer alone, without the rest of the
CLI; the same ``view`` command the main CLI mounts as ``tracerflow view``."""

from __future__ import annotations

import typer

from tracerflow.viewer.cli import register

app = typer.Typer(add_completion=False, help="The tracerflow graph viewer.")


@app.callback()
def _main() -> None:
    """The tracerflow graph viewer."""
    # A callback keeps Typer in group mode, so the command is `view` as in the main CLI.


register(app)

if __name__ == "__main__":
    app()
