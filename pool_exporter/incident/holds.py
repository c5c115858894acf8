"""How long a request keeps its connection: the one hold-time model of replay and simulation.

A `HoldTime` is a lognormal through a median and a 95th percentile: the replay draws its
requests' holds from it, and `Holds.from_lognormal` counts it into histogram buckets when a
measurement came without a histogram. A `Holds` is a histogram the simulation draws from.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.6448536269514722  # the standard normal's 95th percentile
# A lognormal's far tail would let one draw hold a connection for minutes; 10x p95 keeps the
# tail long without one freak request deciding a run.
TAIL_CAP = 10


@dataclass(frozen=True)
class HoldTime:
    """A lognormal hold time through its median and 95th percentile; fixed when the two are
    equal."""

    median: float
    p95: float

    def __post_init__(self) -> None:
        if self.median <= 0 or self.p95 < self.median:
            raise ValueError(
                f"hold time needs 0 < median <= p95, got median {self.median} p95 {self.p95}"
            )

    @property
    def sigma(self) -> float:
        return math.log(self.p95 / self.median) / Z95

    @property
    def mean(self) -> float:
        return self.median * math.exp(self.sigma**2 / 2)

    def cdf(self, x: float) -> float:
        """The share of holds at most `x` seconds long."""
        if x <= 0:
            return 0.0
        if self.sigma == 0:
            return 1.0 if x >= self.median else 0.0
        return 0.5 * (1 + math.erf(math.log(x / self.median) / (self.sigma * math.sqrt(2))))

    def sample(self, rng: random.Random) -> float:
        return min(self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0)), TAIL_CAP * self.p95)


@dataclass(frozen=True)
class Holds:
    """Hold times drawn from a histogram: cumulative shares at upper bounds (as Prometheus's
    `le` buckets count them), uniform within a bucket, then scaled so that their mean is the
    measured one (the histogram's sum / count, which the buckets only approximate)."""

    bounds: tuple[float, ...]
    shares: tuple[float, ...]
    mean: float
    floor: float = 0.0  # the lower edge of the first bucket
    # how many holds the measurement counted: their mean is known within its standard error
    # (0: taken as exact)
    count: float = 0.0

    @classmethod
    def fixed(cls, hold: float) -> Holds:
        """Every hold exactly `hold` seconds."""
        return cls((hold,), (1.0,), hold, floor=hold)

    def __post_init__(self) -> None:
        if self.mean <= 0:
            raise ValueError("the mean hold time must be positive")
        if not self.bounds or len(self.bounds) != len(self.shares):
            raise ValueError("a hold histogram needs one share per bound")
        if any(b <= a for a, b in zip(self.bounds, self.bounds[1:], strict=False)) or any(
            b < a for a, b in zip(self.shares, self.shares[1:], strict=False)
        ):
            raise ValueError("hold buckets must grow")
        if self.shares[-1] <= 0:
            raise ValueError("the hold histogram is empty")

    @classmethod
    def from_buckets(
        cls, buckets: Sequence[tuple[float, float]], mean: float, count: float = 0.0
    ) -> Holds:
        """From cumulative counts (or rates) per upper bound, of `count` holds in all; a count
        beyond the last finite bound (the +Inf bucket) is spread up to twice that bound."""
        finite = [(le, n) for le, n in buckets if math.isfinite(le)]
        total = max(n for _, n in buckets)
        if not finite or total <= 0:
            raise ValueError("the hold histogram is empty")
        bounds = [le for le, _ in finite]
        counts = [n for _, n in finite]
        if counts[-1] < total:
            bounds.append(2 * bounds[-1])
            counts.append(total)
        return cls(tuple(bounds), tuple(n / total for n in counts), mean, count=count)

    @classmethod
    def from_lognormal(
        cls, hold: HoldTime, mean: float, bounds: Sequence[float], count: float = 0.0
    ) -> Holds:
        """`hold` counted into `bounds`, scaled to the measured `mean` of `count` holds: for
        figures that came without a histogram."""
        buckets = [(b, hold.cdf(b)) for b in bounds] + [(math.inf, 1.0)]
        return cls.from_buckets(buckets, mean, count)

    def _raw_moments(self) -> tuple[float, float]:
        """The histogram's mean and mean square, each hold uniform within its bucket."""
        low, previous, first, second = self.floor, 0.0, 0.0, 0.0
        for bound, share in zip(self.bounds, self.shares, strict=True):
            first += (share - previous) * (low + bound) / 2
            second += (share - previous) * (low * low + low * bound + bound * bound) / 3
            low, previous = bound, share
        return first / self.shares[-1], second / self.shares[-1]

    @property
    def _scale(self) -> float:
        raw, _ = self._raw_moments()
        return self.mean / raw if raw > 0 else 1.0

    @property
    def mean_error(self) -> float:
        """The standard error of the measured mean, as a share of it: the holds' coefficient
        of variation over the square root of their count (0 when the count is unknown)."""
        raw, square = self._raw_moments()
        if self.count <= 0 or raw <= 0:
            return 0.0
        return math.sqrt(max(0.0, square / (raw * raw) - 1) / self.count)

    def sampler(self, rng: random.Random, factor: float = 1.0) -> _Sampler:
        return _Sampler(self, rng, self._scale * factor)


class _Sampler:
    def __init__(self, holds: Holds, rng: random.Random, scale: float) -> None:
        self.bounds = holds.bounds
        self.shares = holds.shares
        self.floor = holds.floor
        self.rng = rng
        self.scale = scale

    def __call__(self) -> float:
        u = self.rng.random() * self.shares[-1]
        low, previous = self.floor, 0.0
        for bound, share in zip(self.bounds, self.shares, strict=True):
            if u <= share and share > previous:
                return (low + (bound - low) * (u - previous) / (share - previous)) * self.scale
            low, previous = bound, share
        return self.bounds[-1] * self.scale
