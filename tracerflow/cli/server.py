"""``tracerflow server up|down|status`` (a local Prefect server) and ``tracerflow deploy`` (the
scheduled deployments on it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tracerflow.cli.render import rows_text
from tracerflow.settings import get_settings

server_app = typer.Typer(
    help="A local Prefect server (UI and API) on 127.0.0.1.", no_args_is_help=True
)


@server_app.command()
def up(
    port: int = 4200,
    host: Annotated[str, typer.Option(help="bind address; 127.0.0.1 unless told otherwise")] = (
        "127.0.0.1"
    ),
    database: Annotated[
        str | None,
        typer.Option(
            help="the server's database: postgresql+asyncpg://USER[:PASSWORD]@HOST:PORT/DB or "
            "sqlite+aiosqlite:///PATH; default $PREFECT_API_DATABASE_CONNECTION_URL, else SQLite "
            "under $TRACERFLOW_HOME/prefect"
        ),
    ] = None,
) -> None:
    """Start the server (returns once it is healthy) and print how to point flows at it."""
    from tracerflow import server

    started = server.up(get_settings(), host=host, port=port, database=database)
    typer.echo(f"Prefect server running (pid {started.pid}) at {started.url}")
    typer.echo(f"UI                 {started.url}")
    typer.echo(f"point flows at it  export PREFECT_API_URL={started.api_url}")
    typer.echo(f"database           {started.database}")
    typer.echo(f"log                {started.log_path}")


@server_app.command()
def down() -> None:
    """Stop the server started by `tracerflow server up`, and the temporary server a run left up."""
    from tracerflow import server
    from tracerflow.flows.temporary_server import stop_lingering_server

    settings = get_settings()
    if stop_lingering_server(server.server_dir(settings)):
        typer.echo("stopped the temporary server a run left up")
    typer.echo("stopped" if server.down(settings) else "no server was running")


@server_app.command("status")
def server_status() -> None:
    """Say whether the server runs and answers."""
    from tracerflow import server

    current = server.status(get_settings())
    # Not an error path: the status is the answer, and its exit status lets a script test it
    # (`tracerflow server status || tracerflow server up`), as `systemctl status` does.
    if not current.running:
        typer.echo("not running")
        raise typer.Exit(1)
    typer.echo(
        f"{'healthy' if current.healthy else 'not answering'}: pid {current.pid}, {current.url}, "
        f"database {current.database or 'unknown'}"
    )
    if not current.healthy:
        raise typer.Exit(1)


def deploy(
    prefect_file: Annotated[Path | None, typer.Option(help="default: deployments/prefect.yaml")] = (
        None
    ),
    api_url: Annotated[str | None, typer.Option(help="default: $PREFECT_API_URL")] = None,
) -> None:
    """Register the scheduled deployments (idempotent) with the configured Prefect server; list
    them, and warn of a scheduled suite that could not run on a worker like this machine."""
    from tracerflow.deploy import WORK_POOL, register, suite_readiness

    deployments = register(prefect_file, api_url)
    typer.echo(
        rows_text(
            ("deployment", "schedule", "work_pool"),
            [[d.name, ", ".join(d.schedules) or "none", d.work_pool] for d in deployments],
            "table",
        )
    )
    for deployment in deployments:
        problem = suite_readiness(deployment)
        if problem is not None:
            typer.echo(
                f"warning: {deployment.name} cannot run on a worker like this machine: {problem}",
                err=True,
            )
    typer.echo(f"start a worker: prefect worker start --pool {WORK_POOL}")
