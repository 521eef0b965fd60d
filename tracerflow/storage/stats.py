"""The 95% Student-t interval of a mean, in Python and as a DuckDB macro, without scipy.

The views and `compare` report ``mean ± t(0.975, n-1) · s / √n``. The quantile comes from a table
for 1–30 degrees of freedom and from the Cornish–Fisher expansion above that (error < 4e-8 from
31 on); the SQL macro ``t975`` (created by migration 002, as literal text) holds the same table
and coefficients, so Python and SQL give the same numbers.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

# t(0.975, df) for df = 1..30, to 7 decimals.
T975_TABLE: tuple[float, ...] = (
    12.7062047, 4.3026527, 3.1824463, 2.7764451, 2.5705818, 2.4469119, 2.3646243, 2.3060041,
    2.2621572, 2.2281389, 2.2009852, 2.1788128, 2.1603687, 2.1447867, 2.1314495, 2.1199053,
    2.1098156, 2.1009220, 2.0930241, 2.0859634, 2.0796138, 2.0738731, 2.0686576, 2.0638986,
    2.0595386, 2.0555294, 2.0518305, 2.0484071, 2.0452296, 2.0422725,
)  # fmt: skip
Z975 = 1.959963984540054


# Cornish–Fisher: t(0.975, df) ≈ z + Σ_i c_i / df^i, with c_i polynomials in z = Φ⁻¹(0.975).
_Z = Z975
CORNISH_FISHER_COEFFICIENTS: tuple[float, ...] = (
    (_Z**3 + _Z) / 4,
    (5 * _Z**5 + 16 * _Z**3 + 3 * _Z) / 96,
    (3 * _Z**7 + 19 * _Z**5 + 17 * _Z**3 - 15 * _Z) / 384,
    (79 * _Z**9 + 776 * _Z**7 + 1482 * _Z**5 - 1920 * _Z**3 - 945 * _Z) / 92160,
)


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df ≥ 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be at least 1, got {df}")
    if df <= len(T975_TABLE):
        return T975_TABLE[df - 1]
    return Z975 + sum(c / df**power for power, c in enumerate(CORNISH_FISHER_COEFFICIENTS, 1))


@dataclass(frozen=True)
class MeanInterval:
    """A sample mean with its 95% t interval; the interval is None below two values."""

    n: int
    mean: float | None
    ci_low: float | None
    ci_high: float | None


def mean_interval(values: list[float]) -> MeanInterval:
    if not values:
        return MeanInterval(0, None, None, None)
    mean = statistics.fmean(values)
    if len(values) < 2:
        return MeanInterval(1, mean, None, None)
    half_width = t975(len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))
    return MeanInterval(len(values), mean, mean - half_width, mean + half_width)
