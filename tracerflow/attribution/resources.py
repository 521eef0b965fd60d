"""Per-phase resource accounting: wall time, user/system CPU time, page faults, peak RSS.

Attribution on CPU is as much about the kernel's work (page faults from large temporary buffers)
as about arithmetic, so every phase records both. Peak RSS uses Linux's resettable high-water
mark (``/proc/self/clear_refs``), so it covers one attribution call rather than the whole process.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


@dataclass(frozen=True)
class Usage:
    """What one stretch of work cost the process."""

    wall_s: float
    user_s: float
    system_s: float
    minor_faults: int
    major_faults: int

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.wall_s + other.wall_s,
            self.user_s + other.user_s,
            self.system_s + other.system_s,
            self.minor_faults + other.minor_faults,
            self.major_faults + other.major_faults,
        )


@dataclass(frozen=True)
class UsageReading:
    """The process's clock and resource counters at one moment; two readings give a ``Usage``."""

    wall: float
    user: float
    system: float
    minor_faults: int
    major_faults: int

    @classmethod
    def now(cls) -> UsageReading:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(
            time.perf_counter(), usage.ru_utime, usage.ru_stime, usage.ru_minflt, usage.ru_majflt
        )

    def until(self, later: UsageReading) -> Usage:
        return Usage(
            later.wall - self.wall,
            later.user - self.user,
            later.system - self.system,
            later.minor_faults - self.minor_faults,
            later.major_faults - self.major_faults,
        )


def _status_bytes(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Reset the process's RSS high-water mark to its current RSS; False where unsupported."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def peak_rss_bytes() -> int | None:
    """The RSS high-water mark since the last reset (or since the process started)."""
    peak = _status_bytes("VmHWM")
    if peak is not None:
        return peak
    try:  # not Linux: ru_maxrss is the lifetime peak (bytes on macOS, kB elsewhere)
        import sys

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return maxrss if sys.platform == "darwin" else maxrss * 1024
    except (OSError, ValueError):
        return None
