"""What to replay: the scenario (a push, steady traffic, hold times) and the pool's settings."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pool_exporter.incident import arguments
from pool_exporter.incident.holds import HoldTime
from pool_exporter.incident.traffic import UNIFORM, Push, steady

DEFAULT_HOLD = HoldTime(0.1, 0.4)


@dataclass(frozen=True)
class Scenario:
    """What to replay. Times are seconds from the start of the run."""

    users: int = arguments.USERS
    ramp: float = arguments.RAMP  # seconds over which the push's users arrive
    ramp_shape: str = UNIFORM  # UNIFORM: evenly spaced; POISSON: random arrival times
    hold: HoldTime = DEFAULT_HOLD
    background_rate: float = 0.0  # steady requests per second besides the push
    duration: float = 0.0  # how long the steady traffic runs
    push_at: float = 0.0
    seed: int = 1
    # Hold the connection inside a transaction (a query first, then the hold): what a pooler
    # in transaction mode sees of a request that works between its queries.
    hold_in_transaction: bool = False
    # The URL is a pooler in transaction mode: the transaction's first statement waits there
    # for a server connection, so its time is the pooler's wait (and one round trip) and the
    # rest of the hold the database's. Only an open transaction makes that split true.
    through_pooler: bool = False

    def __post_init__(self) -> None:
        if self.users < 0 or self.ramp < 0 or self.background_rate < 0:
            raise ValueError("users, ramp and background rate must not be negative")
        if self.duration < 0 or self.push_at < 0:
            raise ValueError("duration and push time must not be negative")
        Push(self.users, self.ramp, self.ramp_shape)  # an unknown shape: ValueError, here
        if self.through_pooler and not self.hold_in_transaction:
            raise ValueError("a replay through a pooler holds its connections in a transaction")

    @property
    def push(self) -> Push:
        return Push(self.users, self.ramp, self.ramp_shape)

    def arrivals(self) -> list[tuple[float, float, bool]]:
        """(arrival time, hold time, part of the push) for every request, in arrival order."""
        rng = random.Random(self.seed)
        # each request's hold drawn right after its time, as the replay always drew them: a
        # seed replays the same requests as it did before the arrival model was shared
        planned = [(self.push_at + at, self.hold.sample(rng), True) for at in self.push.times(rng)]
        background = steady(self.background_rate, 0.0, self.duration, rng)
        planned += [(at, self.hold.sample(rng), False) for at in background]
        planned.sort(key=lambda p: p[0])
        return planned


@dataclass(frozen=True)
class PoolSettings:
    pool_size: int = arguments.POOL_SIZE
    max_overflow: int = arguments.MAX_OVERFLOW
    pool_timeout: float = arguments.POOL_TIMEOUT

    def __post_init__(self) -> None:
        if self.pool_size < 1 or self.max_overflow < 0 or self.pool_timeout <= 0:
            raise ValueError("pool size must be at least 1, overflow >= 0 and timeout > 0")

    @property
    def capacity(self) -> int:
        return self.pool_size + self.max_overflow
