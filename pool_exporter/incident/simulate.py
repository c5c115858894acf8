"""A push against a QueuePool, simulated: what the pool really does, event by event, many times.

A fluid or first-come-first-served queue gets a push's timeouts wrong, because SQLAlchemy's
QueuePool is not first come, first served: a woken waiter can lose the returned connection to
a caller arriving in that moment, and then waits again at the back of the line, still counting
down the deadline it started with (queuepool.py). So waits spread far past their mean, and some
callers time out while the mean wait is well under the timeout.

`simulate()` plays that out: c connections; the push's users arriving evenly (or at random)
over its ramp; steady Poisson traffic around it; hold times drawn from the measured histogram;
each woken caller losing its connection to a newcomer that comes within an exponential moment
(`wake` on average); every caller giving up `timeout` seconds after it arrived, unless it
finds a connection at that last look. `predict()` runs it `runs` times with different seeds
and gives the median and the range.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

from .clock import Clock
from .holds import Holds
from .percentiles import nearest_rank
from .queuepool import SERVED, QueuePoolModel
from .traffic import Push, steady

# The moment in which a woken caller loses its connection to a newcomer lasts an exponential
# time of mean W, and W itself differs from run to run (how busy the interpreter and the
# machine are as the push comes): lognormal, with this median and this spread of its log.
# Measured as the share p of wake-ups lost while a push arrives at λ, W = p / ((1 - p) λ), in
# six runs of bench/pool_wakeups.py on SQLite and PostgreSQL, quiet and loaded (84 pushes:
# median 193 µs, spread 0.81; docs/demo.md has the figures). At 500 arrivals a second a woken
# caller then loses about one time in eleven; two spreads either side, one in fifty or one in
# three.
WAKE = 0.0002
WAKE_SPREAD = 0.8
RUNS = 31
# Steady traffic starts this many mean holds before the push (at least a second), so that
# the push meets a pool already busy with it.
WARM_HOLDS = 10


@dataclass(frozen=True)
class Waits:
    """The waits of one layer of the stack (the app's pool, the pooler) in a run, or the
    median of the runs' figures: over every request, and the longest of one served."""

    p50: float
    p99: float
    longest: float

    @classmethod
    def of(cls, waits: list[float], served: list[float]) -> Waits:
        ordered = sorted(waits)
        longest = max(served, default=0.0)
        return cls(nearest_rank(ordered, 0.5), nearest_rank(ordered, 0.99), longest)


@dataclass(frozen=True)
class Run:
    """One simulated push: its timeouts, and the waits of every request in the window and of
    the push's own. Behind a pooler a wait is the sum of the layers' (`layers`), and `late`
    counts the requests that got their connection only after waiting longer than the pool
    timeout: in a layer that has none of its own."""

    timeouts: int
    requests: int
    waited: float  # the share of requests that found no connection free
    wait_p50: float  # over every request, a timed-out one counting its full wait
    wait_p99: float
    longest_wait: float  # of a request that got its connection
    push_waited: float = 0.0  # the share of the push's requests that found none free
    push_mean_wait: float = 0.0  # the mean wait of the push's requests
    late: int = 0
    layers: dict[str, Waits] = field(default_factory=dict)


def window(push: Push, timeout: float, mean_hold: float) -> tuple[float, float]:
    """From when to when (seconds from the push's start) steady traffic is simulated: from
    WARM_HOLDS mean holds before the push until a timeout plus as long after its last user
    arrives, by when every one of its users has its connection or has given up."""
    warm = max(1.0, WARM_HOLDS * mean_hold)
    return -warm, push.ramp + timeout + max(1.0, WARM_HOLDS * mean_hold)


def simulate(
    push: Push,
    holds: Holds,
    rng: random.Random,
    *,
    servers: int,
    timeout: float,
    rate: float,
    wake: float = WAKE,
    hold_factor: float = 1.0,
) -> Run:
    """One run: `push` on top of `rate` steady requests per second against `servers`
    connections with this pool timeout; hold times scaled by `hold_factor`."""
    if servers < 1 or timeout <= 0 or rate < 0:
        raise ValueError("a pool needs at least one connection, a positive timeout, rate >= 0")
    draw = holds.sampler(rng, hold_factor)
    start, end = window(push, timeout, holds.mean * hold_factor)
    pushed = push.arrivals(rng)
    callers = sorted(
        [(at, True) for at in pushed] + [(at, False) for at in steady(rate, start, end, rng)]
    )
    arrivals = [at for at, _ in callers]
    clock = Clock()

    def granted(now: float, caller: int) -> None:
        clock.at(now + draw(), pool.release, caller)

    pool = QueuePoolModel(
        clock, rng, arrivals, granted, servers=servers, timeout=timeout, wake=wake
    )
    for caller, at in enumerate(arrivals):
        clock.at(at, pool.arrive, caller)
    clock.run()
    served = [w for w, s in zip(pool.waits, pool.state, strict=True) if s == SERVED]
    return outcome(
        [in_push for _, in_push in callers],
        pool.waits,
        pool.queued,
        timeouts=pool.timeouts,
        layers={"pool": Waits.of(pool.waits, served)},
        served=served,
    )


def outcome(
    in_push: list[bool],
    waits: list[float],
    queued: bytes | bytearray,
    *,
    timeouts: int,
    layers: dict[str, Waits],
    served: list[float],
    late: int = 0,
) -> Run:
    """A run's figures from every caller's wait (a timed-out one: its full wait), whether it
    was one of the push's and whether it queued; `served`: the waits of those that got their
    connection."""
    ordered = sorted(waits)
    mine = [k for k, pushed in enumerate(in_push) if pushed]
    return Run(
        timeouts=timeouts,
        requests=len(waits),
        waited=sum(queued) / len(waits) if waits else 0.0,
        wait_p50=nearest_rank(ordered, 0.5),
        wait_p99=nearest_rank(ordered, 0.99),
        longest_wait=max(served, default=0.0),
        push_waited=sum(queued[k] for k in mine) / len(mine) if mine else 0.0,
        push_mean_wait=statistics.fmean(waits[k] for k in mine) if mine else 0.0,
        late=late,
        layers=layers,
    )


@dataclass(frozen=True)
class Prediction:
    """`runs` simulated pushes: the median and the range of their timeouts and of their
    longest waits, and the median of their wait percentiles."""

    servers: int
    timeout: float
    runs: int
    timeouts: float  # median
    timeouts_low: int
    timeouts_high: int
    wait_p50: float
    wait_p99: float
    longest_wait: float  # the median run's longest wait of a request that got its connection
    longest_wait_high: float  # the longest in any run
    push_waited: float = 0.0  # the median run's share of the push's requests that waited
    push_mean_wait: float = 0.0  # the median run's mean wait of the push's requests
    # behind a pooler: requests served after waiting past the timeout (median, most in a run)
    late: float = 0.0
    late_high: int = 0
    layers: dict[str, Waits] = field(default_factory=dict)  # the median of the runs' figures

    @property
    def times_out(self) -> bool:
        """The median run has a request that timed out, or that waited past the timeout in a
        layer with no timeout of its own."""
        return self.timeouts > 0 or self.late > 0

    @property
    def may_time_out(self) -> bool:
        return self.timeouts_high > 0 or self.late_high > 0


def predict(
    push: Push,
    holds: Holds,
    *,
    servers: int,
    timeout: float,
    rate: float,
    runs: int = RUNS,
    seed: int = 1,
    wake: float = WAKE,
    wake_spread: float = WAKE_SPREAD,
    hold_factor: float = 1.0,
) -> Prediction:
    """`simulate()` `runs` times, seeds `seed`, `seed + 1`, ...: the same seeds for every
    pool size, so that sizes are compared on the same arrivals and holds. Each run takes its
    own wake-up window, lognormal around `wake` (the median) with `wake_spread`, and its own
    mean hold: the mean was measured from a finite count of holds, and each run draws it
    within the measurement's standard error (`Holds.mean_error`), so that the range covers
    what the measurement does not pin down."""

    def one(rng: random.Random, wake: float, hold_factor: float) -> Run:
        return simulate(
            push,
            holds,
            rng,
            servers=servers,
            timeout=timeout,
            rate=rate,
            wake=wake,
            hold_factor=hold_factor,
        )

    return repeat(
        one,
        holds,
        servers=servers,
        timeout=timeout,
        runs=runs,
        seed=seed,
        wake=wake,
        wake_spread=wake_spread,
        hold_factor=hold_factor,
    )


def repeat(
    one: Callable[[random.Random, float, float], Run],
    holds: Holds,
    *,
    servers: int,
    timeout: float,
    runs: int,
    seed: int,
    wake: float,
    wake_spread: float,
    hold_factor: float,
) -> Prediction:
    """`one(rng, wake, hold_factor)` `runs` times, as `predict()` says, summed up."""
    results = []
    for k in range(runs):
        rng = random.Random(seed + k)
        drawn = max(0.5, 1 + holds.mean_error * rng.gauss(0.0, 1.0)) if holds.mean_error else 1.0
        this_wake = wake * math.exp(wake_spread * rng.gauss(0.0, 1.0))
        results.append(one(rng, this_wake, hold_factor * drawn))
    counts = sorted(r.timeouts for r in results)
    return Prediction(
        servers=servers,
        timeout=timeout,
        runs=runs,
        timeouts=statistics.median(counts),
        timeouts_low=counts[0],
        timeouts_high=counts[-1],
        wait_p50=statistics.median(r.wait_p50 for r in results),
        wait_p99=statistics.median(r.wait_p99 for r in results),
        longest_wait=statistics.median(r.longest_wait for r in results),
        longest_wait_high=max(r.longest_wait for r in results),
        push_waited=statistics.median(r.push_waited for r in results),
        push_mean_wait=statistics.median(r.push_mean_wait for r in results),
        late=statistics.median(r.late for r in results),
        late_high=max(r.late for r in results),
        layers={
            name: Waits(
                statistics.median(r.layers[name].p50 for r in results),
                statistics.median(r.layers[name].p99 for r in results),
                statistics.median(r.layers[name].longest for r in results),
            )
            for name in results[0].layers
        },
    )
