"""The one cache policy every file-producing stage shares: the artifact store.

A stage's pure function loads its result from the store when the folder is intact and computes
it otherwise (``ArtifactStore.get_or_compute``; ``cached`` in its typed result). Its task is
``stage_task(name)(the function)``, or a task that adds logging and progress around it. The task
keeps no cache and persists no result, so Prefect never reads (let alone unpickles) a result
file; a store hit shows as Prefect's ``Cached`` state. Stage tasks return a state, so flows
``submit`` them.

The per-prompt stages (attribute, score, export) run a chunk of prompts per task run
(``chunk_task``): a task run costs the Prefect API far more than a toy prompt's work, and each
prompt still has its own store entry per stage, so caching stays per prompt. A prompt that fails
is a ``PromptFailure`` in the chunk's results and the chunk's other prompts go on.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger
from prefect.states import Completed, State

from tracerflow.tasks.results import PromptFailure, StageResult

P = ParamSpec("P")
R = TypeVar("R", bound=StageResult)


class ChunkResults:
    """A chunk's results in its prompts' order: each prompt's stage result, or the
    ``PromptFailure`` that stopped it.

    A plain iterable on purpose, not a list: Prefect walks every list, dict, dataclass and model
    among a task's parameters, field by field, looking for futures, and walking each chunk's
    results in the score and export tasks was a third of a fully cached 500-prompt re-run
    (docs/performance.md, "The flow's overhead").
    """

    __slots__ = ("items",)

    def __init__(self, items: Iterable[Any]) -> None:
        self.items = list(items)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __repr__(self) -> str:
        return f"ChunkResults({self.items!r})"


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


def chunk_state(stage: str, results: ChunkResults) -> State[ChunkResults]:
    """A chunk task's state: ``Cached`` when the store had every result it gave, else
    ``Completed``, with a message counting the prompts that failed at this stage."""
    given = [result for result in results if isinstance(result, StageResult)]
    failed = sum(isinstance(r, PromptFailure) and r.stage == stage for r in results)
    cached = bool(given) and not failed and all(result.cached for result in given)
    message = f"{failed} of {len(results)} prompts failed" if failed else None
    return Completed(data=results, name="Cached" if cached else "Completed", message=message)


def chunk_task(
    name: str, **options: Any
) -> Callable[[Callable[P, ChunkResults]], Task[P, State[ChunkResults]]]:
    """``@task`` for a stage over a chunk of prompts (see above); it returns the chunk's state."""

    def decorate(chunk_fn: Callable[P, ChunkResults]) -> Task[P, State[ChunkResults]]:
        @functools.wraps(chunk_fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> State[ChunkResults]:
            return chunk_state(name, chunk_fn(*args, **kwargs))

        return task(name=name, cache_policy=NO_CACHE, persist_result=False, **options)(run)

    return decorate


def for_each_prompt(
    stage: str,
    prompts: Sequence[str],
    upstream: Sequence[Sequence[Any]],
    compute: Callable[..., StageResult],
) -> ChunkResults:
    """``compute(*upstream results)`` for each prompt of a chunk: a prompt an earlier stage
    failed keeps that failure; one that fails here becomes a ``PromptFailure`` (logged), and
    the others go on. ``upstream``: per prompt, the results of the stages this one reads."""
    logger = get_run_logger()
    results: list[Any] = []
    for prompt, inputs in zip(prompts, upstream, strict=True):
        earlier = next((value for value in inputs if isinstance(value, PromptFailure)), None)
        if earlier is not None:
            results.append(earlier)
            continue
        try:
            results.append(compute(*inputs))
        except Exception as error:
            logger.error("%s of %r failed: %s", stage, prompt[:60], error)
            results.append(PromptFailure.of(stage, error))
    return ChunkResults(results)
