"""``tracerflow run`` and ``tracerflow demo``: check a run request, run the scoring flow, print
its scores and where its database and graphs are."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from tracerflow.cli.db_option import StoreOption, score_store
from tracerflow.cli.options import typer_signature
from tracerflow.cli.render import rows_text
from tracerflow.errors import RunNotRecordedError, TracerflowError, UsageError
from tracerflow.flows.report import METRICS_COLUMNS, SCORE_COLUMNS
from tracerflow.flows.validation import (
    check_preset,
    suite_request,
    validate_run_request,
)
from tracerflow.parameters import RunOptions, RunRequest, run_request
from tracerflow.storage.store import Store
from tracerflow.suites import read_prompts_file


def run(
    transcoder: Annotated[
        list[str] | None,
        typer.Option(
            help="preset name, local checkpoint folder, a training run's folder of checkpoint "
            "folders or a glob of them (each scored with its training step), or Hub repo "
            "owner/repo or owner/repo@revision (repeatable)",
            metavar="TEXT",
        ),
    ] = None,
    prompt: Annotated[
        list[str] | None, typer.Option(help="a prompt (repeatable)", metavar="TEXT")
    ] = None,
    prompts_file: Annotated[
        Path | None, typer.Option(help="one prompt per line", metavar="PATH")
    ] = None,
    preset: Annotated[
        str | None,
        typer.Option(help="a preset: its transcoder, model and defaults", metavar="TEXT"),
    ] = None,
    suite: Annotated[
        str | None,
        typer.Option(help="a suite file (or built-in suite name) to run once", metavar="TEXT"),
    ] = None,
    dask_workers: Annotated[
        int | None,
        typer.Option(help="fan out over a local Dask cluster of this size", metavar="INTEGER"),
    ] = None,
    store: StoreOption = None,
    **options: Any,
) -> None:
    """Score transcoders on prompts; record every score; export the graphs."""
    use_store(store)
    if suite is not None:
        inputs = {"transcoder": transcoder, "prompt": prompt, "prompts_file": prompts_file}
        ignored = _given_beside_suite({**inputs, "preset": preset}, options)
        if ignored:
            raise UsageError(
                f"--suite runs its suite file as it is: {', '.join(ignored)} cannot be given with "
                "it (set them in the suite file)"
            )
        _run_suite(suite, dask_workers)
        return
    if dask_workers is not None:
        raise UsageError("--dask-workers fans out a --suite's run; give a --suite with it")
    if preset is not None:
        check_preset(preset)
    transcoders = list(transcoder or []) + ([preset] if preset else [])
    prompts = list(prompt or [])
    if prompts_file is not None:
        prompts += read_prompts_file(prompts_file)
    if not prompts and preset is not None:
        from tracerflow.presets import builtin_prompts, find_preset

        found = find_preset(preset)
        # the preset's own (its transcoder's demo prompts), else the built-in suite's
        prompts = list(found.prompts) if found is not None and found.prompts else builtin_prompts()
    _run_scoring(run_request(transcoders=transcoders, prompts=prompts, **options))


def _given_beside_suite(inputs: dict[str, Any], options: dict[str, Any]) -> list[str]:
    """The flags of the inputs and run options given beside ``--suite``, which runs its suite
    file as it is and would ignore them."""
    given = [name for name, value in inputs.items() if value]
    given += [
        name for name, value in options.items() if value != RunOptions.model_fields[name].default
    ]
    return [f"--{name.replace('_', '-')}" for name in given]


# ``tracerflow run``'s options: its own (above), then one per run option, derived from
# ``RunOptions`` (type, default, limits and help stated there), then ``--store``.
run.__signature__ = typer_signature(  # type: ignore[attr-defined]
    run, RunOptions, before="store"
)


def demo(store: StoreOption = None) -> None:
    """Score the built-in toy CLT and PLT on the built-in prompts (offline, about a minute)."""
    from tracerflow.presets import builtin_prompts

    use_store(store)
    _run_scoring(run_request(transcoders=["toy-clt", "toy-plt"], prompts=builtin_prompts()))


def use_store(value: str | None) -> None:
    """Make ``--store`` the run's store: checked now, then handed to the flow the way every
    setting is, through ``$TRACERFLOW_STORE`` (the flow reads its settings when it starts)."""
    if value is None:
        return
    score_store(value)  # a malformed value is refused here, before anything starts
    os.environ["TRACERFLOW_STORE"] = value


def _run_scoring(request: RunRequest) -> None:
    """Check the request (a bad input raises before anything starts), then run the scoring flow
    on the Prefect server ``prefect_api`` finds or starts, and report it."""
    validate_run_request(request)
    _check_store()
    _say_started(
        f"scoring {_count(request.transcoders, 'transcoder')} on "
        f"{_count(request.prompts, 'prompt')}"
    )
    from tracerflow.flows.temporary_server import prefect_api

    with logged_run(), prefect_api(_preparing("tracerflow.flows.score"), _say):
        from tracerflow.flows.score import score_flow

        _report(score_flow(request, return_state=True))


def _run_suite(suite: str, dask_workers: int | None) -> None:
    from tracerflow.flows.temporary_server import prefect_api
    from tracerflow.suites import load_suite

    # Validate before starting Prefect: errors name the file and line, or the bad input.
    validate_run_request(suite_request(load_suite(suite)))
    _check_store()
    most = os.cpu_count() or 1  # each worker is a process that attributes on every core
    if dask_workers is not None and not 1 <= dask_workers <= most:
        raise UsageError(
            f"--dask-workers must be a whole number from 1 to {most} (this machine's CPUs), "
            f"got {dask_workers}"
        )
    _say_started(f"running suite {suite}")
    with logged_run(), prefect_api(_preparing("tracerflow.flows.suite"), _say):
        from tracerflow.flows.suite import suite_flow

        _report(suite_flow(suite, dask_workers=dask_workers, return_state=True))


def _say_started(what: str) -> None:
    """The run's first line, at once: what follows it (importing Prefect, starting a server,
    torch too on a home's first run) is seconds of silence otherwise."""
    _say(f"{what} (loading Prefect first)")


def _say(line: str) -> None:
    """A progress line of the command itself, on stderr with the run's log lines."""
    typer.echo(line, err=True)


def _count(items: list[str], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _preparing(module: str) -> Callable[[], object]:
    """What the run needs before its flow starts, done when called: while a temporary server
    boots. Import ``module`` (the flow: Prefect's engine, seconds) and learn torch's default
    thread count, which imports torch (seconds) unless a run in this home asked before."""

    def prepare() -> None:
        from tracerflow.machine import default_threads
        from tracerflow.settings import get_settings

        importlib.import_module(module)
        default_threads(get_settings().home)

    return prepare


@contextmanager
def logged_run() -> Iterator[None]:
    """The run's log whole in a file under the home, and on the terminal without tracebacks or
    Prefect's repeats of a failure; an error that ends the run names the file."""
    # Prefect sets its logging up whenever `prefect.main` is first imported, set up already or
    # not (0.3 CPU-s each): imported first, the run's flow (which needs it) sets it up once.
    import prefect.main  # noqa: F401

    from tracerflow.cli.run_log import new_log_path, terminal_and_file
    from tracerflow.settings import get_settings

    with terminal_and_file(new_log_path(get_settings().home)) as path:
        try:
            yield
        except TracerflowError as error:
            error.log_path = str(path)
            raise


def _check_store() -> None:
    """Refuse a score store the run could not record into, before the run starts."""
    from tracerflow.settings import get_settings
    from tracerflow.storage.database import check_run_store

    check_run_store(get_settings().score_store)


def _report(state: Any) -> None:
    """Print a finished run's scores (read back from the database if the run failed part-way)
    and where its database and graphs are; raise when the run failed. A run whose record could
    not be written says so last, with the scores it computed."""
    from tracerflow.settings import get_settings
    from tracerflow.storage.queries import scores_of_run

    settings = get_settings()
    result = state.result(raise_on_failure=False)
    not_recorded = result if isinstance(result, RunNotRecordedError) else None
    if not_recorded is not None:
        rows = not_recorded.rows
    elif isinstance(result, list):
        rows = result
    else:
        rows = scores_of_run(settings.score_store, str(state.state_details.flow_run_id))
    if rows:
        typer.echo("")
        typer.echo(scores_table(rows))
    quality = _metrics_of_run(settings.score_store, str(state.state_details.flow_run_id))
    if quality:
        typer.echo("")
        typer.echo("transcoder quality (all layers; docs/metrics.md)")
        typer.echo(metrics_table(quality))
    typer.echo("")
    typer.echo(f"score store       {settings.score_store.describe()}")
    typer.echo(f"graph files       {settings.graph_files_dir}")
    typer.echo("view the graphs   tracerflow view")
    if not_recorded is not None:
        raise not_recorded
    if isinstance(result, TracerflowError):  # what ended the run, said once, as it was raised
        raise result
    if state.is_failed():
        raise TracerflowError(state.message or "the flow run failed")


def scores_table(rows: list[dict[str, Any]]) -> str:
    """A run's scores as `tracerflow history` prints scores: the database's column names,
    four decimals, an empty cell for none, long prompts cut."""
    return rows_text(SCORE_COLUMNS, [[row.get(c) for c in SCORE_COLUMNS] for row in rows], "table")


def metrics_table(rows: list[dict[str, Any]]) -> str:
    """A run's transcoder metrics, as the scores table prints them."""
    return rows_text(
        METRICS_COLUMNS, [[row.get(c) for c in METRICS_COLUMNS] for row in rows], "table"
    )


def _metrics_of_run(store: Store, flow_run_id: str) -> list[dict[str, Any]]:
    """The metrics the run recorded; none (and no error) when they cannot be read: the scores
    and paths above are what a run's report must not lose."""
    from tracerflow.storage.quality import metrics_of_run

    try:
        return metrics_of_run(store, flow_run_id)
    except TracerflowError:
        return []
