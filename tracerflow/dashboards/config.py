"""How much a feature dashboard keeps: part of the dashboards' store key, so it is read without
the torch the computing (``compute``) needs."""

from __future__ import annotations

from dataclasses import dataclass

# A seed mixed into the reservoir's hash; fixed so that dashboards are reproducible.
DEFAULT_SEED = 0


@dataclass(frozen=True)
class DashboardConfig:
    """How much each feature keeps. All sizes are per feature."""

    n_top: int = 16
    n_reservoir: int = 32
    window_before: int = 12
    window_after: int = 4
    seed: int = DEFAULT_SEED

    @property
    def window(self) -> int:
        return self.window_before + 1 + self.window_after
