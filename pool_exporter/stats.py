"""Per-pool counters kept in plain Python numbers: what the hooks write and a scrape reads."""

from __future__ import annotations

import sys
import threading
from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

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
    """Bucket counts and a sum."""

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


@dataclass(frozen=True)
class Field:
    """One PoolStats attribute as multiprocess mode stores, sums and folds it.

    A `gauge` describes one live worker and goes with it; `counter`s and `histogram`s are
    summed across workers, exited ones included. `keys` are the keys of a dict attribute.
    `number` is how a gauge's or counter's value is stored (a histogram's counts are ints,
    its sum a float).
    """

    name: str
    kind: Literal["gauge", "counter", "histogram"]
    keys: tuple[Any, ...] = ()
    number: Literal["int", "float"] = "int"


# Every number PoolStats keeps, in storage order. A new PoolStats attribute is added here (and
# written in reset()); the multiprocess store, its archive and the reader follow this list.
# Multiprocess mode stores every field after each rare update; its hot-path methods (enter,
# checked_out, waited_out, checked_in and oldest_changed in multiprocess/store.py) store only
# what they change, so one that changes a new field stores it there too
# (tests/test_multiprocess_store.py compares every field after every update).
FIELDS: tuple[Field, ...] = (
    Field("in_use", "gauge"),
    Field("idle", "gauge"),
    Field("waiting", "gauge"),
    Field("checkouts", "counter"),
    Field("timeouts", "counter"),
    Field("cancellations", "counter"),
    Field("checkout_errors", "counter"),
    Field("connects", "counter"),
    Field("connect_errors", "counter"),
    Field("closes", "counter"),
    Field("detaches", "counter"),
    Field("invalidations", "counter", (False, True)),
    Field("hook_errors", "counter", metrics.HOOKS),
    Field("wait", "histogram"),
    Field("hold", "histogram"),
    Field("connect_time", "histogram"),
    Field("oldest_checkout_started", "gauge", number="float"),
    Field("long_checkouts", "counter"),
    Field("gc_returned", "counter"),
    # Issue 29. New fields rather than new meanings for old ones, so that a reader of either
    # version reads the other's files (docs/sidecar.md): `wait` stays the successful checkouts'
    # waits and `closes` the total, beside the other outcomes' waits and the closes by reason.
    Field("wait_timeout", "histogram"),
    Field("wait_cancelled", "histogram"),
    Field("wait_error", "histogram"),
    Field("waited", "counter"),
    Field("close_reasons", "counter", metrics.CLOSE_REASONS),
    Field("opening", "gauge"),
    # Settings, not counts: configure() and isolation_known() write them, reset() keeps them
    # (a forked child's pool has its parent's settings). recycle is -1 where it is not set.
    Field("recycle", "gauge", number="float"),
    Field("isolation", "gauge"),
)

# Every PoolStats method that changes a value, and only those. Each variant is made from this
# list (derive() below): the locked one runs each under its lock, the multiprocess one stores
# into its file after each (multiprocess/store.py), so a new update listed here reaches all of
# them. A new PoolStats method goes here or in OTHERS (tests/test_stats_variants.py checks).
UPDATES: tuple[str, ...] = (
    "reset",
    "configure",
    "isolation_known",
    "enter",
    "checked_out",
    "waited_out",
    "failed",
    "checked_in",
    "detached",
    "opening_started",
    "opening_ended",
    "connected",
    "closed",
    "invalidated",
    "hook_failed",
    "oldest_changed",
    "held_long",
    "collected",
    "retire",
)
# PoolStats' other methods: snapshot() reads every value at once (what a scrape takes). A
# locked variant locks UNDER_LOCK.
OTHERS: tuple[str, ...] = ("snapshot",)
UNDER_LOCK: tuple[str, ...] = (*UPDATES, "snapshot")


class PoolStats:
    """Everything measured about one pool in this process.

    The hooks call one method per event, and each method is a handful of integer updates:
    this runs on every checkout, where prometheus-client's per-metric locks would cost more
    than the checkout itself (bench/overhead.py). The updates take no lock: under the GIL an
    attribute `+=` on an int cannot be interleaved with another thread's, and a lock here
    could deadlock when the garbage collector returns a forgotten connection (its checkin
    listener runs inside whatever code triggered the collection). Free-threaded builds get
    LockedPoolStats instead. Each method updates the gauges before it observes a histogram, so
    a failure half-way leaves the gauges consistent with the markers the checkout tracker
    keeps (checkouts.py).
    """

    def __init__(self) -> None:
        self.capacity: Capacity | None = None
        self.recycle = -1.0  # pool_recycle in seconds; -1: not set
        self.isolation = 0  # the isolation level, 1 + its index in metrics.ISOLATION_LEVELS
        self.reset()

    def reset(self) -> None:
        """Start from zero: a new instrumentation, or a child process after fork."""
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
        self.wait = Histogram(metrics.WAIT_BUCKETS)  # the successful checkouts'
        self.wait_timeout = Histogram(metrics.WAIT_BUCKETS)
        self.wait_cancelled = Histogram(metrics.WAIT_BUCKETS)
        self.wait_error = Histogram(metrics.WAIT_BUCKETS)
        self.waited = 0
        self.hold = Histogram(metrics.HOLD_BUCKETS)
        self.connect_time = Histogram(metrics.CONNECT_BUCKETS)
        self.opening = 0
        self.close_reasons = dict.fromkeys(metrics.CLOSE_REASONS, 0)
        # Unix time at which the oldest outstanding checkout began, 0 when none is out; the
        # hooks write it (a plain field, so a store can publish it), the age is computed at
        # scrape time.
        self.oldest_checkout_started = 0.0
        self.long_checkouts = 0
        self.gc_returned = 0

    def configure(self, capacity: Capacity | None, recycle: float | None = None) -> None:
        """The configuration of the pool now counted, read again whenever the engine's pool is
        replaced; that pool holds no idle connection of ours yet. `recycle`: pool_recycle in
        seconds, None where it is not set."""
        self.capacity = capacity
        self.recycle = -1.0 if recycle is None else recycle
        self.idle = 0

    def isolation_known(self, level: int) -> None:
        """The isolation level the pool's connections run in, once known: 1 + its index in
        metrics.ISOLATION_LEVELS."""
        self.isolation = level

    @property
    def recycle_seconds(self) -> float | None:
        """pool_recycle, where it is set."""
        return self.recycle if self.recycle >= 0 else None

    @property
    def overflow(self) -> int:
        cap = self.capacity
        if cap is None or cap.size == 0:
            return 0
        return max(0, self.in_use + self.idle - cap.size)

    # -- the hot path: one call when a caller enters checkout, one when it leaves --

    def enter(self) -> None:
        self.waiting += 1

    def checked_out(self, wait: float, first: bool, was_idle: bool) -> None:
        """A checkout succeeded; `first` is False when a pool handed out a connection that is
        already checked out (SingletonThreadPool re-entry, StaticPool sharing)."""
        self.waiting -= 1
        self.checkouts += 1
        if first:
            self.in_use += 1
        if was_idle:
            self.idle -= 1
        h = self.wait  # Histogram.observe inlined: this is the hottest line of the exporter
        h.counts[bisect_left(h.bounds, wait)] += 1
        h.sum += wait

    def waited_out(self, wait: float, was_idle: bool) -> None:
        """A checkout succeeded that found no idle connection in the pool: it waited for one
        to come back (`was_idle`: it was idle in the pool by the time it was taken) or for a
        new one to open: counted as waited, then as `checked_out` counts a first checkout.
        Apart from `checked_out` so that the checkouts that did not wait pay nothing for
        telling the two apart."""
        self.waited += 1
        self.checked_out(wait, True, was_idle)

    def failed(self, reason: str, wait: float) -> None:
        """A checkout failed after `wait` seconds, for `reason`."""
        self.waiting -= 1
        if reason == TIMEOUT:
            self.timeouts += 1
            self.wait_timeout.observe(wait)
        elif reason == CANCELLED:
            self.cancellations += 1
            self.wait_cancelled.observe(wait)
        else:
            self.checkout_errors += 1
            if reason == CONNECT_ERROR:
                self.connect_errors += 1
            self.wait_error.observe(wait)

    def checked_in(self, hold: float | None, now_idle: bool) -> None:
        if now_idle:
            self.idle += 1
        if hold is not None:
            self.in_use -= 1
            h = self.hold
            h.counts[bisect_left(h.bounds, hold)] += 1
            h.sum += hold

    # -- connection lifecycle: rarer events --

    def detached(self, hold: float | None) -> None:
        self.detaches += 1
        if hold is not None:
            self.in_use -= 1
            self.hold.observe(hold)

    def opening_started(self) -> None:
        """The pool called the driver to open a connection."""
        self.opening += 1

    def opening_ended(self) -> None:
        """The driver's connect() returned or raised."""
        self.opening -= 1

    def connected(self, seconds: float) -> None:
        self.connects += 1
        self.connect_time.observe(seconds)

    def closed(self, was_idle: bool, reason: str) -> None:
        """A DBAPI connection was closed, for `reason` (metrics.CLOSE_REASONS)."""
        self.closes += 1
        reasons = self.close_reasons
        reasons[reason] = reasons.get(reason, 0) + 1
        if was_idle:
            self.idle -= 1

    def invalidated(self, soft: bool) -> None:
        self.invalidations[soft] += 1

    def hook_failed(self, hook: str) -> None:
        self.hook_errors[hook] = self.hook_errors.get(hook, 0) + 1

    def oldest_changed(self, started: float) -> None:
        """The oldest outstanding checkout began at Unix time `started` (0: none is out)."""
        self.oldest_checkout_started = started

    def held_long(self) -> None:
        """A checkout crossed long_checkout_threshold (once per checkout)."""
        self.long_checkouts += 1

    def collected(self) -> None:
        """The garbage collector returned a connection the application never checked in."""
        self.gc_returned += 1

    def retire(self) -> None:
        """The pool is no longer instrumented (only multiprocess mode records that)."""

    # -- reading --

    def snapshot(self) -> PoolStats:
        """A plain copy of every value: what a scrape reads, so that every family it serves
        comes from the same numbers (the overflow from the in-use and idle counts it shows).

        Here the copy is not atomic: the hooks take no lock (see the class docstring), so an
        update on another thread can land between two fields, or be half done when the copy is
        taken: a scrape may show a checkout counted whose wait is not yet observed, or a
        histogram's sum one observation ahead of its buckets. Each number is one the stats
        held, and the next scrape has the rest. The locked variants copy under their lock,
        between two updates."""
        out = PoolStats()
        out.capacity = self.capacity
        for f in FIELDS:
            value = getattr(self, f.name)
            if f.kind == "histogram":
                copy: Histogram = getattr(out, f.name)
                copy.counts, copy.sum = list(value.counts), value.sum
            else:
                setattr(out, f.name, dict(value) if f.keys else value)
        return out


def gil_enabled() -> bool:
    """Whether this Python runs with the GIL; a free-threaded build gets the locked variants
    (LockedPoolStats, routes.LockedRoutes and their multiprocess ones)."""
    return bool(getattr(sys, "_is_gil_enabled", lambda: True)())


class Locking:
    """The locked variants' one lock: made before the class's own __init__, which runs
    updates already, and taken by each update that derive(cls, locked, ...) wraps. Reentrant,
    because a garbage-collected connection's checkin can run inside another update on the
    same thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.RLock()
        super().__init__(*args, **kwargs)


class LockedPoolStats(Locking, PoolStats):
    """PoolStats for free-threaded Python, where `+=` is not atomic: every update and every
    snapshot under one lock."""


def locked(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` run under its object's `_lock`."""

    def run_locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    run_locked.__name__ = run_locked.__qualname__ = method.__name__
    run_locked.__doc__ = method.__doc__
    return run_locked


def derive(cls: type, wrap: Callable[[Callable[..., Any]], Callable[..., Any]],
           names: Iterable[str]) -> None:  # fmt: skip
    """Replace each of `names` on `cls` by `wrap` of the method `cls` has now (its own or
    inherited): how every variant of PoolStats is made from UPDATES (and of routes.Routes
    from ROUTE_UPDATES)."""
    for name in names:
        setattr(cls, name, wrap(getattr(cls, name)))


derive(LockedPoolStats, locked, UNDER_LOCK)


def new_stats() -> PoolStats:
    return PoolStats() if gil_enabled() else LockedPoolStats()
