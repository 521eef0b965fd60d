"""``tracerflow subgraph score SLUG FILE``: score a set of pinned nodes of an exported graph (the
subgraph rule of docs/metrics.md) and record it in the score store's ``subgraphs`` table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tracerflow.cli.db_option import StoreOption, score_store
from tracerflow.cli.render import OutputFormat, emit, rows_text
from tracerflow.errors import UsageError
from tracerflow.storage.subgraphs import SubgraphRecord

subgraph_app = typer.Typer(
    help="Subgraph scores: how much of a graph a set of pinned nodes carries.",
    no_args_is_help=True,
)

# The one row `subgraph score` prints: the whole graph's scores, then the subgraph's.
SCORE_COLUMNS = (
    "slug", "n_pinned_features", "n_selected_features", "graph_replacement_score",
    "graph_completeness_score", "subgraph_replacement_score", "subgraph_completeness_score",
)  # fmt: skip


@subgraph_app.command()
def score(
    slug: Annotated[str, typer.Argument(help="The graph's slug, as the viewer names it.")],
    file: Annotated[
        Path,
        typer.Argument(
            help='JSON of the pinned node ids: {"pinnedIds": ..., "supernodes": ...} as the '
            "viewer's Save stores them (a <slug>.view.json, or a graph file's qParams).",
        ),
    ],
    output_format: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.table,
    store: StoreOption = None,
) -> None:
    """Score the pinned nodes of graph SLUG (non-pinned features merged into their error
    nodes), record the result, and print the graph's and the subgraph's replacement and
    completeness scores."""
    from tracerflow.settings import get_settings
    from tracerflow.subgraphs import score_and_record
    from tracerflow.viewer.slugs import validate_slug

    validate_slug(slug)  # InvalidSlugError: exit 2, naming it
    q_params = read_pinned_file(file)
    record = score_and_record(
        score_store(store), get_settings().artifacts_dir, slug, q_params, str(file), "cli"
    )
    emit(rows_text(SCORE_COLUMNS, [score_row(record)], output_format.value))


def read_pinned_file(file: Path) -> Any:
    """The view state in ``file``: its ``qParams`` when it has one (a graph file or a Save
    body), else the object itself. ``UsageError`` naming the file when it is not strict JSON."""
    from tracerflow.viewer.saved_views import strict_loads

    try:
        value = strict_loads(file.read_bytes())
    except OSError as error:
        raise UsageError(f"cannot read {file}: {error.strerror or error}") from None
    except (ValueError, RecursionError) as error:
        raise UsageError(f"{file}: not a JSON file of pinned node ids ({error})") from None
    if isinstance(value, dict) and isinstance(value.get("qParams"), dict):
        return value["qParams"]
    return value


def score_row(record: SubgraphRecord) -> list[Any]:
    return [
        record.slug,
        record.n_pinned_features,
        record.n_selected_features,
        record.graph_replacement_score,
        record.graph_completeness_score,
        record.subgraph_replacement_score,
        record.subgraph_completeness_score,
    ]
