"""The one cache policy every file-producing stage shares: the artifact store.

A stage's pure function loads its result from the store when the folder is intact and computes
it otherwise (``cached`` in its typed result). The Prefect task around it keeps no cache and
persists no result, so Prefect never reads (let alone unpickles) a result file; a store hit shows
as Prefect's ``Cached`` state. Stage tasks return a state, so flows ``submit`` them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, State

from tracerflow.tasks.results import StageResult

P = ParamSpec("P")
R = TypeVar("R", bound=StageResult)


def stage_state(result: R) -> State[R]:
    """A finished task's state: ``Cached`` when the store had the result, else ``Completed``."""
    return Completed(data=result, name="Cached" if result.cached else "Completed")


def stage_task(name: str, **options: Any) -> Callable[[Callable[P, R]], Task[P, State[R]]]:
    """``@task`` for a stage function that loads from the store or computes (see above)."""

    def decorate(stage_fn: Callable[P, R]) -> Task[P, State[R]]:
        @functools.wraps(stage_fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> State[R]:
            return stage_state(stage_fn(*args, **kwargs))

        return task(name=name, cache_policy=NO_CACHE, persist_result=False, **options)(run)

    return decorate
