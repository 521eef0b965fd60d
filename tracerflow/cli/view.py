"""``tracerflow view`` (and ``python -m tracerflow.viewer view``): serve the attribution-graph
viewer for every graph in the graph-files folder."""

from __future__ import annotations

import webbrowser
from pathlib import Path
from typing import Annotated

import typer

from tracerflow.cli.db_option import StoreOption, score_store
from tracerflow.errors import TracerflowError
from tracerflow.viewer.server import DEFAULT_HOST, DEFAULT_PORT, make_server


def view(
    port: Annotated[
        int, typer.Option(help="Port to listen on (0: any free port).", min=0, max=65535)
    ] = DEFAULT_PORT,
    host: Annotated[
        str, typer.Option(help="Address to bind. Anything but loopback exposes your graphs.")
    ] = DEFAULT_HOST,
    open_browser: Annotated[
        bool, typer.Option("--open", help="Open the index in a web browser.")
    ] = False,
    graph_dir: Annotated[
        Path | None,
        typer.Option(
            help="Graph-files folder. Default: $TRACERFLOW_PUBLISH_ROOT, else"
            " $TRACERFLOW_HOME/graph-files."
        ),
    ] = None,
    store: StoreOption = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Refuse the viewer's Save (POST /save_graph).")
    ] = False,
) -> None:
    """Serve the graph viewer, with an index of every exported graph. Ctrl-C stops it."""
    from tracerflow.settings import get_settings

    settings = get_settings()
    graph_dir = (graph_dir or settings.graph_files_dir).expanduser()
    try:
        server = make_server(
            graph_dir,
            host=host,
            port=port,
            store=score_store(store),
            read_only=read_only,
            artifacts_dir=settings.artifacts_dir,
        )
    except OSError as error:
        # Exit 1 like `tracerflow server up` on a taken port: the input is valid, the port busy.
        raise TracerflowError(
            f"cannot listen on {host}:{port}: {error.strerror or error}"
        ) from error

    # Ctrl-C stops cleanly from the moment the port is bound, not only once serving: a
    # script that reads the printed URL may interrupt at any point after it.
    try:
        if server.allowed_hosts is None:
            typer.echo(
                f"warning: listening on {host}: anyone who can reach this machine can read"
                " your graphs",
                err=True,
            )
        if not graph_dir.is_dir():
            typer.echo(f"note: {graph_dir} does not exist yet; the index is empty until it does")
        typer.echo(f"Serving graphs from {server.graph_files_dir}")
        typer.echo(f"Viewer: {server.url}  (Ctrl-C to stop)", color=False)
        if open_browser:
            webbrowser.open(server.url)
        server.serve_forever()
    except KeyboardInterrupt:
        typer.echo("\nStopped.")
    finally:
        server.server_close()
