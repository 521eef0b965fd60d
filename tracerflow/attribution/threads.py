"""Pick torch's intra-op thread count for phase 4 by measuring, not by counting cores.

On an idle 2-core machine two threads run the attribution GEMMs ~1.5x faster than one. On a CPU
shared with other busy processes the same two threads can be ~3x *slower* than one (measured
here at load 3-4: 34 s vs 12 s for one phase 4): every parallel region ends in a barrier that
waits for whichever thread the scheduler has just descheduled, and the waiting thread spins,
burning the CPU time the other one needed. Neither setting is right everywhere, and the load
changes during a run, so ``ThreadTuner`` times the blocks of phase 4 themselves: it keeps a
work-normalised rate per candidate thread count, runs the best one, and re-tries the others
now and then. Results do not depend on the thread count beyond float rounding.

The setting is process-wide (``torch.set_num_threads``); the tuner restores it when done.
"""

from __future__ import annotations

import time
from types import TracebackType

import torch

# Re-try a non-best thread count once per this many blocks (1/16 of blocks at most run slower).
EXPLORE_EVERY = 16
# Weight of the newest measurement in a candidate's running rate.
SMOOTHING = 0.5


class ThreadTuner:
    """Context manager: ``with ThreadTuner(enabled) as tuner: ... tuner.step(work, run_block)``."""

    def __init__(self, enabled: bool = True) -> None:
        self.initial = torch.get_num_threads()
        self.enabled = enabled and self.initial > 1
        self.candidates = sorted({self.initial, max(1, self.initial // 2), 1}, reverse=True)
        self.rates: dict[int, float] = {}
        self.blocks = 0
        self.choices: list[int] = []

    def __enter__(self) -> ThreadTuner:
        if self.enabled:
            torch.set_num_threads(self.probe())
        return self

    def probe(self, repeats: int = 2) -> int:
        """The candidate that runs a GEMM of phase 4's shape fastest right now (~50 ms).

        Sets the count for the phases before phase 4, which run once and cannot be tuned from
        their own timings.
        """
        a, b = torch.randn(512, 768), torch.randn(768, 768)
        best: dict[int, float] = {}
        for _ in range(repeats + 1):  # the first round warms the thread pools up
            for threads in self.candidates:
                torch.set_num_threads(threads)
                started = time.perf_counter()
                a @ b
                elapsed = time.perf_counter() - started
                best[threads] = min(best.get(threads, elapsed), elapsed)
        winner = min(best, key=best.__getitem__)
        # Phase 4 tries the winner first.
        self.candidates.sort(key=lambda threads: threads != winner)
        return winner

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        torch.set_num_threads(self.initial)

    def _choose(self) -> int:
        untried = [n for n in self.candidates if n not in self.rates]
        if untried:
            return untried[0]
        best = max(self.rates, key=self.rates.__getitem__)
        if self.blocks % EXPLORE_EVERY == EXPLORE_EVERY - 1:
            others = [n for n in self.candidates if n != best]
            return others[(self.blocks // EXPLORE_EVERY) % len(others)]
        return best

    def begin(self) -> float:
        """Set the thread count for the next block; returns its start time."""
        if self.enabled:
            threads = self._choose()
            if threads != torch.get_num_threads():
                torch.set_num_threads(threads)
            self.choices.append(threads)
        return time.perf_counter()

    def end(self, started: float, work: float) -> None:
        """Record a finished block: ``work`` in any unit proportional to its arithmetic."""
        if not self.enabled:
            return
        elapsed = max(time.perf_counter() - started, 1e-6)
        threads = torch.get_num_threads()
        rate = work / elapsed
        self.blocks += 1
        if self.blocks == 1:
            return  # the first block pays one-off costs (allocator, MKL initialisation)
        previous = self.rates.get(threads)
        self.rates[threads] = (
            rate if previous is None else SMOOTHING * rate + (1 - SMOOTHING) * previous
        )
