"""Queueing arithmetic for a connection pool: Little's law, Erlang C, and a burst's backlog.

A pool of c connections serving requests that arrive at rate λ and hold a connection for S
seconds on average is an M/M/c queue: the offered load is A = λ·S (Little's law: the mean
number of connections busy), and Erlang C gives the probability that an arriving request
finds all c busy and has to wait. Hold times are rarely exponential, so the numbers are an
estimate; longer-tailed holds wait somewhat more (Kingman's approximation scales the wait by
(1 + cv²)/2, where cv is the hold time's coefficient of variation).

A push is not a steady state: for the seconds it lasts, requests arrive faster than the pool
serves them and a backlog builds. `burst()` works that out as a fluid queue, first come,
first served: a first estimate, shown beside the simulation (simulate.py) that decides
whether anyone waits past the pool timeout, because QueuePool does not serve in order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def offered_load(rate: float, mean_hold: float) -> float:
    """Little's law: connections busy on average, A = λ·S."""
    if rate < 0 or mean_hold < 0:
        raise ValueError("rate and hold time must not be negative")
    return rate * mean_hold


def erlang_b(servers: int, load: float) -> float:
    """Blocking probability of c servers at A erlangs, by the stable recursion
    B(0) = 1, B(k) = A·B(k-1) / (k + A·B(k-1))."""
    if servers < 0 or load < 0:
        raise ValueError("servers and load must not be negative")
    b = 1.0
    for k in range(1, servers + 1):
        b = load * b / (k + load * b)
    return b


def erlang_c(servers: int, load: float) -> float:
    """Probability that an arriving request waits: C(c, A) = c·B / (c - A·(1 - B)).

    1.0 when the pool cannot keep up at all (A ≥ c): the queue grows without bound.
    """
    if servers <= 0:
        return 1.0
    if load <= 0:
        return 0.0
    if load >= servers:
        return 1.0
    b = erlang_b(servers, load)
    return servers * b / (servers - load * (1 - b))


def mean_wait(servers: int, load: float, mean_hold: float) -> float:
    """Expected wait of an arriving request, W = C(c, A) · S / (c - A); inf when A ≥ c."""
    if load >= servers:
        return math.inf
    return erlang_c(servers, load) * mean_hold / (servers - load)


def wait_quantile(servers: int, load: float, mean_hold: float, share: float) -> float:
    """The wait that only `share` of requests exceed (0 when fewer than that wait at all)."""
    if load >= servers:
        return math.inf
    c = erlang_c(servers, load)
    if c <= share or mean_hold <= 0:
        return 0.0
    return mean_hold / (servers - load) * math.log(c / share)


@dataclass(frozen=True)
class Servers:
    """The smallest pool meeting a wait target, and its figures."""

    servers: int
    load: float
    p_wait: float
    mean_wait: float


def smallest_pool(
    load: float, mean_hold: float, *, p_wait: float, max_mean_wait: float, limit: int = 100_000
) -> Servers:
    """The smallest c with C(c, A) ≤ p_wait and W ≤ max_mean_wait."""
    if not 0 < p_wait <= 1:
        raise ValueError(f"the target wait probability must be in (0, 1], got {p_wait}")
    if max_mean_wait < 0:
        raise ValueError("the target mean wait must not be negative")
    c = max(1, math.floor(load) + 1)
    while c <= limit:
        pw = erlang_c(c, load)
        w = mean_wait(c, load, mean_hold)
        if pw <= p_wait and w <= max_mean_wait:
            return Servers(c, load, pw, w)
        c += 1
    raise ValueError(f"no pool of up to {limit} connections meets the target at {load:.1f} erlangs")


def max_rate(
    servers: int, mean_hold: float, *, p_wait: float, base_rate: float = 0.0, step: float = 1e-4
) -> float:
    """The most extra requests per second a pool of `servers` takes on top of `base_rate`
    while C(c, A) stays at or below `p_wait` (bisection on the rate)."""
    if mean_hold <= 0:
        return math.inf
    if erlang_c(servers, base_rate * mean_hold) > p_wait:
        return 0.0
    lo, hi = base_rate, servers / mean_hold
    while hi - lo > step * max(1.0, hi):
        mid = (lo + hi) / 2
        if erlang_c(servers, mid * mean_hold) <= p_wait:
            lo = mid
        else:
            hi = mid
    return lo - base_rate


@dataclass(frozen=True)
class Burst:
    """How a pool rides a burst, as a fluid queue: arrivals at `rate` for `seconds`, served
    at `capacity` requests per second (connections / mean hold) minus the steady traffic."""

    arrivals: float
    rate: float
    seconds: float
    capacity: float
    backlog: float  # requests queued when the burst stops arriving
    longest_wait: float  # the wait of the last request to arrive
    drain: float  # seconds after the burst's end until the queue is empty

    @property
    def queues(self) -> bool:
        return self.backlog > 0


def burst(
    arrivals: float, seconds: float, servers: float, mean_hold: float, base_rate: float = 0.0
) -> Burst:
    """A burst of `arrivals` requests over `seconds` (0: all at once) against `servers`
    connections busy with `base_rate` steady requests per second besides."""
    if mean_hold <= 0:
        raise ValueError("the mean hold time must be positive")
    capacity = max(0.0, servers / mean_hold - base_rate)
    rate = arrivals / seconds if seconds > 0 else math.inf
    # Requests that find a free connection start at once: the first `free` need no queue.
    free = max(0.0, servers - base_rate * mean_hold)
    backlog = max(0.0, arrivals - free - capacity * seconds)
    if backlog == 0:
        return Burst(arrivals, rate, seconds, capacity, 0.0, 0.0, 0.0)
    if capacity == 0:
        return Burst(arrivals, rate, seconds, capacity, backlog, math.inf, math.inf)
    drain = backlog / capacity
    return Burst(arrivals, rate, seconds, capacity, backlog, drain, drain)
