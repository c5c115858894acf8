"""A push against a QueuePool, simulated: what the pool really does, event by event, many times.

A fluid or first-come-first-served queue gets a push's timeouts wrong, because SQLAlchemy's
QueuePool is not first come, first served. A caller that finds no connection waits in
`sqlalchemy.util.queue.Queue.get()` on a `threading.Condition`; a returned connection is put
back and `notify()` wakes the caller that has waited longest, but that caller has to take
the queue's lock again before it can take the connection. A caller arriving in that moment
takes the lock first, finds the connection and leaves with it; the woken caller finds the
queue empty and waits again, now behind every other waiter (`Condition.wait()` appends it to
the end of the waiter list), still counting down the same deadline it started with. So waits
spread far past their mean, and some callers time out while the mean wait is well under the
timeout.

`simulate()` plays that out: c connections; the push's users arriving evenly (or at random)
over its ramp; steady Poisson traffic around it; hold times drawn from the measured
histogram; each woken caller taking a random wake-up delay (exponential, `wake` on average)
during which a newcomer may take its connection; every caller giving up `timeout` seconds
after it arrived. `predict()` runs it `runs` times with different seeds and gives the median
and the range.
"""

from __future__ import annotations

import heapq
import random
import statistics
from collections import deque
from dataclasses import dataclass

from .holds import Holds
from .percentiles import nearest_rank
from .traffic import Push, steady

# The mean time a woken caller takes to run again and take the queue's lock: not measured
# directly but chosen so that simulated timeouts match replayed ones (SQLite, threads, a
# 2-core machine; docs/demo.md). At 500 arrivals a second a newcomer then takes the
# connection first about one time in five.
WAKE = 0.0005
RUNS = 31
# Steady traffic starts this many mean holds before the push (at least a second), so that
# the push meets a pool already busy with it.
WARM_HOLDS = 10


@dataclass(frozen=True)
class Run:
    """One simulated push: its timeouts, and the waits of every request in the window."""

    timeouts: int
    requests: int
    waited: float  # the share of requests that found no connection free
    wait_p50: float  # over every request, a timed-out one counting its full wait
    wait_p99: float
    longest_wait: float  # of a request that got its connection


def window(push: Push, timeout: float, mean_hold: float) -> tuple[float, float]:
    """From when to when (seconds from the push's start) steady traffic is simulated: from
    WARM_HOLDS mean holds before the push until a timeout plus as long after its last user
    arrives, by when every one of its users has its connection or has given up."""
    warm = max(1.0, WARM_HOLDS * mean_hold)
    return -warm, push.ramp + timeout + max(1.0, WARM_HOLDS * mean_hold)


_ARRIVE, _RELEASE, _WAKE, _GIVE_UP = range(4)


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
    arrivals = sorted([*push.arrivals(rng), *steady(rate, start, end, rng)])
    events = [(at, i, _ARRIVE, i) for i, at in enumerate(arrivals)]
    heapq.heapify(events)
    seq = len(arrivals)
    free = servers  # connections not checked out (opened at once when first needed)
    waiting: deque[int] = deque()  # callers in Condition.wait(), longest waiting first
    state = [0] * len(arrivals)  # 0 not yet served, 1 has its connection, 2 gave up
    woken = [False] * len(arrivals)  # notified, not yet running again
    waits = [0.0] * len(arrivals)
    served: list[float] = []
    timeouts = queued = 0

    def take(i: int, now: float) -> None:
        nonlocal free, seq
        free -= 1
        state[i] = 1
        waits[i] = now - arrivals[i]
        served.append(waits[i])
        seq += 1
        heapq.heappush(events, (now + draw(), seq, _RELEASE, i))

    while events:
        now, _, kind, i = heapq.heappop(events)
        if kind == _ARRIVE:
            if free > 0:
                take(i, now)
            else:
                queued += 1
                waiting.append(i)
                seq += 1
                heapq.heappush(events, (now + timeout, seq, _GIVE_UP, i))
        elif kind == _RELEASE:
            free += 1
            # notify(): the longest waiter still waiting wakes, after a delay in which a
            # newcomer may take the connection
            while waiting:
                w = waiting.popleft()
                if state[w] == 0:  # one that gave up is skipped here, not searched for
                    woken[w] = True
                    seq += 1
                    delay = rng.expovariate(1 / wake) if wake > 0 else 0.0
                    heapq.heappush(events, (now + delay, seq, _WAKE, w))
                    break
        elif kind == _WAKE:
            woken[i] = False
            if state[i] != 0:
                continue
            if free > 0:
                take(i, now)
            elif now - arrivals[i] >= timeout:
                state[i], waits[i] = 2, timeout
                timeouts += 1
            else:
                waiting.append(i)  # beaten to it: back of the line, same deadline
        elif state[i] == 0 and not woken[i]:  # gave up in line; a woken one's wake-up decides
            state[i], waits[i] = 2, timeout
            timeouts += 1
    ordered = sorted(waits)
    return Run(
        timeouts=timeouts,
        requests=len(arrivals),
        waited=queued / len(arrivals) if arrivals else 0.0,
        wait_p50=nearest_rank(ordered, 0.5),
        wait_p99=nearest_rank(ordered, 0.99),
        longest_wait=max(served, default=0.0),
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

    @property
    def times_out(self) -> bool:
        return self.timeouts > 0

    @property
    def may_time_out(self) -> bool:
        return self.timeouts_high > 0


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
    hold_factor: float = 1.0,
) -> Prediction:
    """`simulate()` `runs` times, seeds `seed`, `seed + 1`, ...: the same seeds for every
    pool size, so that sizes are compared on the same arrivals and holds."""
    results = [
        simulate(
            push,
            holds,
            random.Random(seed + k),
            servers=servers,
            timeout=timeout,
            rate=rate,
            wake=wake,
            hold_factor=hold_factor,
        )
        for k in range(runs)
    ]
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
    )
