"""What arrives at a pool, for the replay and the simulation alike: a push's users over its
ramp, and steady traffic around it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

# The arrival shapes of a push. "poisson": each user at an independent, uniformly drawn time
# in the ramp, which is a Poisson process given its count (one pool's share of a push that a
# load balancer splits request by request arrives like that).
UNIFORM, POISSON = "uniform", "poisson"
SHAPES = (UNIFORM, POISSON)


@dataclass(frozen=True)
class Push:
    """`users` arriving over `ramp` seconds (0: at once), evenly spaced (UNIFORM) or at random
    times (POISSON)."""

    users: int
    ramp: float
    shape: str = UNIFORM

    def __post_init__(self) -> None:
        if self.users < 0 or self.ramp < 0:
            raise ValueError(f"a push needs users >= 0 and a ramp >= 0, got {self}")
        if self.shape not in SHAPES:
            raise ValueError(f"the arrival shape must be {' or '.join(SHAPES)}, got {self.shape!r}")

    def times(self, rng: random.Random) -> Iterator[float]:
        """Seconds from the push's start, user by user (at random: not in order), each drawn
        when it is asked for: a caller may draw more per user in between."""
        for i in range(self.users):
            yield self.ramp * i / self.users if self.shape == UNIFORM else rng.uniform(0, self.ramp)

    def arrivals(self, rng: random.Random) -> list[float]:
        """Seconds from the push's start, in order."""
        return sorted(self.times(rng))


def steady(rate: float, start: float, end: float, rng: random.Random) -> Iterator[float]:
    """Poisson arrivals at `rate` per second from `start` until before `end`, in order, each
    drawn when it is asked for."""
    t = start
    while rate > 0:
        t += rng.expovariate(rate)
        if t >= end:
            return
        yield t
