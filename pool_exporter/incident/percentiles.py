"""Percentiles by nearest rank, for the replay's measurements and the simulation's runs alike:
each one a value that was actually seen, never an interpolation between two."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The `q` quantile (0-1) of values sorted in ascending order; 0 for none."""
    if not ordered:
        return 0.0
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """p50, p90, p95, p99, max and mean of `values` ({} for none)."""
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50": nearest_rank(ordered, 0.5),
        "p90": nearest_rank(ordered, 0.9),
        "p95": nearest_rank(ordered, 0.95),
        "p99": nearest_rank(ordered, 0.99),
        "max": ordered[-1],
        "mean": statistics.fmean(ordered),
    }
