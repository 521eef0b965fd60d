"""``tracerflow export neuronpedia SLUG``, ``tracerflow upload SLUG`` and ``tracerflow export
saebench``: tracerflow's graphs and metrics in the files Neuronpedia and SAEBench read
(``tracerflow.interop``)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from tracerflow.cli.db_option import StoreOption, score_store
from tracerflow.cli.plot import ForceOption
from tracerflow.cli.render import check_out_path, write_atomically
from tracerflow.errors import ConfigError, StorageError, UsageError
from tracerflow.fsutil import write_text_atomically
from tracerflow.interop import neuronpedia, saebench
from tracerflow.storage.store import NoHistoryError

export_app = typer.Typer(
    help="Write graphs and metrics in the files other tools read (Neuronpedia, SAEBench).",
    no_args_is_help=True,
)

GraphDirOption = Annotated[
    Path | None,
    typer.Option(help="Graph-files folder. Default: $TRACERFLOW_HOME/graph-files."),
]
ScanOption = Annotated[
    str | None,
    typer.Option(
        help="Neuronpedia model id to file the graph under, e.g. gpt2-small. "
        "Default: the model the graph's score row names."
    ),
]
SourceSetOption = Annotated[
    str | None,
    typer.Option(
        help="Neuronpedia source set holding these features' dashboards, e.g. "
        "gemmascope-transcoder-16k (metadata.feature_details)."
    ),
]


def upload_ready_graph(
    slug: str, graph_dir: Path | None, scan: str | None, source_set: str | None, store: str | None
) -> dict[str, Any]:
    """The graph ``slug`` from the graph-files folder, with its saved view, as Neuronpedia
    takes it (``interop.neuronpedia.neuronpedia_graph``)."""
    from tracerflow.settings import get_settings
    from tracerflow.viewer.saved_views import saved_view
    from tracerflow.viewer.slugs import validate_slug

    folder = (graph_dir or get_settings().graph_files_dir).expanduser()
    path = folder / f"{validate_slug(slug)}.json"
    try:
        graph = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"no graph {slug!r} in {folder} (tracerflow view lists them)") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"cannot read the graph file {path}: {error}") from None
    if not isinstance(graph, dict):
        raise ConfigError(f"the graph file {path} is not a JSON object")
    row = _score_row(slug, store)
    scan = scan or (row or {}).get("model_name")
    if not scan:
        raise UsageError(f"no score row names the model of {slug!r}: give --scan (e.g. gpt2-small)")
    q_params = saved_view(folder, slug) or graph.get("qParams") or {}
    return neuronpedia.neuronpedia_graph(
        graph,
        q_params,
        scan=scan,
        created_at_ms=int(time.time() * 1000),
        source_urls=neuronpedia.source_urls(
            (row or {}).get("transcoder_source"), (row or {}).get("transcoder_revision")
        ),
        source_set=source_set,
    )


def _score_row(slug: str, store: str | None) -> dict[str, Any] | None:
    """The newest score row of graph ``slug``; None when the store has none."""
    from tracerflow.storage.queries import graph_index

    try:
        return next((row for row in graph_index(score_store(store)) if row["slug"] == slug), None)
    except NoHistoryError:
        return None


@export_app.command("neuronpedia")
def export_neuronpedia(
    slug: Annotated[str, typer.Argument(help="The graph's slug (tracerflow view lists them).")],
    out: Annotated[
        Path | None, typer.Option(help="File to write. Default: ./<slug>.neuronpedia.json.")
    ] = None,
    scan: ScanOption = None,
    source_set: SourceSetOption = None,
    graph_dir: GraphDirOption = None,
    force: ForceOption = False,
    store: StoreOption = None,
) -> None:
    """Write graph SLUG as Neuronpedia uploads it: the model id, prompt tokens, the saved
    subgraph (pinned ids, supernodes) and the features' labels."""
    from tracerflow.viewer.slugs import validate_slug

    target = out or Path(f"{validate_slug(slug)}.neuronpedia.json")  # a slug names no path
    check_out_path(target, score_store(store), force)
    graph = upload_ready_graph(slug, graph_dir, scan, source_set, store)
    text = json.dumps(graph, allow_nan=False)
    write_atomically(target, lambda temp: temp.write_text(text, encoding="utf-8"))
    typer.echo(f"wrote {target} (Neuronpedia model id {graph['metadata']['scan']})")


def upload(
    slug: Annotated[str, typer.Argument(help="The graph's slug (tracerflow view lists them).")],
    scan: ScanOption = None,
    source_set: SourceSetOption = None,
    api_url: Annotated[
        str | None,
        typer.Option(
            help=f"Neuronpedia's API. Default: ${neuronpedia.API_URL_VARIABLE}, else "
            f"{neuronpedia.DEFAULT_API_URL}."
        ),
    ] = None,
    graph_dir: GraphDirOption = None,
    store: StoreOption = None,
) -> None:
    """Upload graph SLUG to Neuronpedia (the key from $NEURONPEDIA_API_KEY)."""
    api_key = os.environ.get(neuronpedia.API_KEY_VARIABLE, "").strip()
    if not api_key:
        raise UsageError(
            f"set {neuronpedia.API_KEY_VARIABLE} to your Neuronpedia API key to upload "
            "(tracerflow export neuronpedia writes the file without one)"
        )
    url = api_url or os.environ.get(neuronpedia.API_URL_VARIABLE) or neuronpedia.DEFAULT_API_URL
    graph = upload_ready_graph(slug, graph_dir, scan, source_set, store)
    shown = neuronpedia.upload_graph(
        json.dumps(graph, allow_nan=False), api_key=api_key, api_url=url
    )
    typer.echo(f"uploaded {slug}: {shown}")


@export_app.command("saebench")
def export_saebench(
    out: Annotated[
        Path, typer.Option(help="Folder to write <transcoder>_<id>_eval_results.json files in.")
    ] = Path("saebench"),
    transcoder: Annotated[
        str | None, typer.Option(help="Only this transcoder (source or transcoder id).")
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="Only evaluations from this date/time on (UTC).")
    ] = None,
    store: StoreOption = None,
) -> None:
    """One SAEBench core-eval JSON per recorded transcoder evaluation (docs/metrics.md says
    which SAEBench metrics carry over); a file of the same evaluation is replaced."""
    from tracerflow.storage.quality import evaluations

    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise StorageError(f"--out {out} is not a folder; name a folder (it is made if missing)")
    if not out.parent.is_dir():
        raise StorageError(f"--out {out}: the folder {out.parent} does not exist")

    try:
        found = evaluations(score_store(store), transcoder=transcoder, since=since)
    except NoHistoryError:
        found = []
    if not found:
        typer.echo("no evaluations match", err=True)
        return
    out.mkdir(exist_ok=True)
    for evaluation in found:
        result = saebench.core_eval(evaluation.all_layers, evaluation.layers)
        target = out / saebench.result_file_name(evaluation.all_layers)
        write_text_atomically(target, json.dumps(result, indent=2, allow_nan=False))
        typer.echo(str(target))
