"""circuit-tracer's own ``attribute``, run unchanged, with its phases timed from outside.

The fallback when the fast path does not cover a model or a circuit-tracer version, and the
baseline the benchmark compares against. circuit-tracer logs one line as each phase starts and
ends; a stream that takes a resource snapshot at every write turns those lines into per-phase
wall/CPU/page-fault figures without touching circuit-tracer's code.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import sys
from typing import TYPE_CHECKING, Any

import torch

from tracerflow.attribution.resources import Usage, UsageReading

if TYPE_CHECKING:
    from circuit_tracer.graph import Graph

PHASES = ("precompute", "forward", "inputs", "logits", "features", "package")
_PHASE_START = re.compile(r"^Phase (\d):")


class _PhaseClock(io.TextIOBase):
    """A text stream that notes when each of circuit-tracer's phase log lines arrives."""

    def __init__(self, echo: bool) -> None:
        self.marks: list[tuple[str, UsageReading]] = []
        self.echo = echo
        self._pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        snapshot = UsageReading.now()
        if self.echo:
            sys.__stderr__.write(text)  # type: ignore[union-attr]
        self._pending += text
        *lines, self._pending = re.split(r"[\r\n]", self._pending)
        for line in lines:
            if match := _PHASE_START.match(line):
                self.marks.append((PHASES[int(match.group(1))], snapshot))
            elif line.startswith("Feature attributions completed"):
                self.marks.append(("package", snapshot))
            elif line.startswith("Attribution completed"):
                self.marks.append(("end", snapshot))
        return len(text)

    def usage(self) -> dict[str, Usage]:
        return {
            name: start.until(end)
            for (name, start), (_, end) in zip(self.marks, self.marks[1:], strict=False)
        }


def run_stock(
    prompt: str | torch.Tensor,
    model: Any,
    *,
    echo: bool = False,
    **kwargs: Any,
) -> tuple[Graph, dict[str, Usage]]:
    """``circuit_tracer.attribute(prompt, model, **kwargs)`` and its per-phase usage.

    The usage dict has ``PHASES`` keys (those that ran) plus ``total``.
    """
    from circuit_tracer import attribute as stock_attribute

    clock = _PhaseClock(echo=echo)
    # circuit-tracer logs its phases only when its "attribution" logger has no handler yet (it
    # then adds a stderr handler, which lands on the clock): set any existing ones aside.
    logger = logging.getLogger("attribution")
    existing = list(logger.handlers)
    for handler in existing:
        logger.removeHandler(handler)
    start = UsageReading.now()
    try:
        with contextlib.redirect_stderr(clock):  # type: ignore[type-var]
            graph = stock_attribute(prompt, model, verbose=True, **kwargs)
    finally:
        for handler in existing:
            logger.addHandler(handler)
    usage = clock.usage()
    usage["total"] = start.until(UsageReading.now())
    return graph, usage
