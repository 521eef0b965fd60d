"""The ``tracerflow`` command line: the Typer app, one module per command group, and the one
place where a ``TracerflowError`` becomes ``error: <message>`` on stderr and the error's exit
status (2 for bad input, 1 for a run that failed; the table is in ``tracerflow.errors``). The
same place sets tracerflow's Prefect defaults before a command runs."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from tracerflow.cli import (
    export,
    history,
    plot,
    presets,
    run,
    server,
    sql,
    store,
    subgraph,
    transcoders,
    view,
)
from tracerflow.errors import TracerflowError
from tracerflow.settings import configure_prefect_defaults


class TracerflowGroup(TyperGroup):
    """A command group that reports a ``TracerflowError`` raised by any command under it as one
    line and its ``exit_code``, never a traceback."""

    def invoke(self, ctx: Any) -> Any:
        # Every command runs after this, and nothing imports Prefect before it: the CLI's
        # modules import Prefect only inside the commands that use it.
        configure_prefect_defaults()
        try:
            return super().invoke(ctx)
        except TracerflowError as error:
            log = f" (full log: {error.log_path})" if error.log_path else ""
            typer.echo(f"error: {error}{log}", err=True)
            raise typer.Exit(error.exit_code) from None


app = typer.Typer(
    cls=TracerflowGroup,
    help="Score sparse transcoders with circuit-tracer; keep every score; browse every graph.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# Registered in the order `tracerflow --help` lists them (commands first, then groups).
app.command()(run.run)
app.command()(run.demo)
app.command("history")(history.history_command)
app.command("compare")(history.compare_command)
app.command("sql")(sql.sql_command)
app.add_typer(plot.plot_app, name="plot")
app.add_typer(server.server_app, name="server")
app.add_typer(store.store_app, name="store")
app.add_typer(export.export_app, name="export")
app.add_typer(subgraph.subgraph_app, name="subgraph")
app.command()(server.deploy)
app.command("presets")(presets.presets_command)
app.command("view")(view.view)
app.command()(transcoders.convert)
app.command()(transcoders.inspect)
app.command()(export.upload)


def main() -> None:
    """The ``tracerflow`` script."""
    app()
