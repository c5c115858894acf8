"""Per-pool counters kept in plain Python numbers: what the hooks write and a scrape reads."""

from __future__ import annotations

import threading
from bisect import bisect_left
from dataclasses import dataclass

from . import metrics

# Why a checkout failed; each reason has its own counter.
TIMEOUT = "timeout"
CANCELLED = "cancelled"
CONNECT_ERROR = "connect_error"
ERROR = "error"


@dataclass(frozen=True)
class Capacity:
    """A queue pool's configuration; other pool classes have none."""

    size: int
    max_overflow: int
    timeout: float

    @property
    def max_connections(self) -> float:
        """size + max_overflow; unbounded for pool_size=0 or max_overflow=-1."""
        if self.size == 0 or self.max_overflow < 0:
            return float("inf")
        return self.size + self.max_overflow


class Histogram:
    """Bucket counts and a sum; `observe` must be called with the owner's lock held."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bucket (`le` is inclusive).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs, as prometheus-client's HistogramMetricFamily wants."""
        out: list[tuple[str, float]] = []
        total = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


class PoolStats:
    """Everything measured about one pool in this process.

    The hooks call one method per event; each takes the lock once. Plain numbers under a lock
    cost a fraction of prometheus-client's per-metric locks, which matters on a path that runs
    for every checkout (see bench/overhead.py). Each method updates the gauges before it
    observes a histogram, so a failure half-way leaves the gauges consistent with the markers
    the hooks keep in record_info.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.capacity: Capacity | None = None
        self.reset()

    def reset(self) -> None:
        """Start from zero: a new instrumentation, or a child process after fork."""
        self._lock = threading.Lock()  # a lock held by another thread at fork stays held
        self.in_use = 0
        self.idle = 0
        self.waiting = 0
        self.checkouts = 0
        self.timeouts = 0
        self.cancellations = 0
        self.checkout_errors = 0
        self.connects = 0
        self.connect_errors = 0
        self.closes = 0
        self.detaches = 0
        self.invalidations = {False: 0, True: 0}
        self.hook_errors = dict.fromkeys(metrics.HOOKS, 0)
        self.wait = Histogram(metrics.WAIT_BUCKETS)
        self.hold = Histogram(metrics.HOLD_BUCKETS)
        self.connect_time = Histogram(metrics.CONNECT_BUCKETS)

    def configure(self, capacity: Capacity | None) -> None:
        """The pool's configuration, read again whenever the engine's pool is replaced."""
        self.capacity = capacity

    @property
    def overflow(self) -> int:
        cap = self.capacity
        if cap is None or cap.size == 0:
            return 0
        return max(0, self.in_use + self.idle - cap.size)

    # -- the hot path: one call when a caller enters checkout, one when it leaves --

    def enter(self) -> None:
        with self._lock:
            self.waiting += 1

    def checked_out(self, wait: float, first: bool, was_idle: bool) -> None:
        """A checkout succeeded; `first` is False when a pool handed out a connection that is
        already checked out (SingletonThreadPool re-entry, StaticPool sharing)."""
        with self._lock:
            self.waiting -= 1
            self.checkouts += 1
            if first:
                self.in_use += 1
            if was_idle:
                self.idle -= 1
            self.wait.observe(wait)

    def failed(self, reason: str) -> None:
        with self._lock:
            self.waiting -= 1
            if reason == TIMEOUT:
                self.timeouts += 1
            elif reason == CANCELLED:
                self.cancellations += 1
            else:
                self.checkout_errors += 1
                if reason == CONNECT_ERROR:
                    self.connect_errors += 1

    def checked_in(self, hold: float | None, now_idle: bool) -> None:
        with self._lock:
            if now_idle:
                self.idle += 1
            if hold is not None:
                self.in_use -= 1
                self.hold.observe(hold)

    # -- connection lifecycle: rarer events --

    def detached(self, hold: float | None) -> None:
        with self._lock:
            self.detaches += 1
            if hold is not None:
                self.in_use -= 1
                self.hold.observe(hold)

    def connected(self, seconds: float) -> None:
        with self._lock:
            self.connects += 1
            self.connect_time.observe(seconds)

    def closed(self, was_idle: bool) -> None:
        with self._lock:
            self.closes += 1
            if was_idle:
                self.idle -= 1

    def invalidated(self, soft: bool) -> None:
        with self._lock:
            self.invalidations[soft] += 1

    def hook_failed(self, hook: str) -> None:
        with self._lock:
            self.hook_errors[hook] = self.hook_errors.get(hook, 0) + 1
