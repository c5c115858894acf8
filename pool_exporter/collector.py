"""Scrape-time collector: turns every instrumented pool's PoolStats into metric families."""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

# prometheus-client's family base class is imported as Family: `m.Metric` is the contract's.
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.core import Metric as Family
from prometheus_client.registry import Collector, CollectorRegistry

from . import metrics as m
from .exemplars import HOLD, WAIT_SERIES

if TYPE_CHECKING:
    from .exemplars import Exemplars, Latest, Traced
    from .routes import Routes, Totals
    from .stats import Capacity, Histogram, PoolStats


class PoolSource:
    """What the collector reads for one pool: its label, its stats, its info labels, its
    exemplars (exemplars.py) and, with instrument()'s `route=`, its counts by route."""

    __slots__ = ("exemplars", "info", "name", "routes", "stats")

    def __init__(
        self,
        name: str,
        stats: PoolStats,
        info: dict[str, str],
        routes: Routes | None,
        exemplars: Exemplars,
    ) -> None:
        self.name = name
        self.stats = stats
        self.info = info
        self.routes = routes
        self.exemplars = exemplars


def family(metric: m.Metric, per_worker: bool = False) -> Family:
    """An empty family of `metric`; `per_worker`: see families()."""
    labels = list(metric.label_names)
    if per_worker and metric.kind in ("gauge", "info"):
        labels.append(m.WORKER_LABEL)
    if metric.kind == "gauge":
        return GaugeMetricFamily(metric.name, metric.help, labels=labels)
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=labels)
    if metric.kind == "histogram":
        return HistogramMetricFamily(metric.name, metric.help, labels=labels)
    # The info metric's own labels (pool_class, ...) come with each sample's value.
    own = [m.POOL_LABEL, m.WORKER_LABEL] if per_worker else [m.POOL_LABEL]
    return InfoMetricFamily(metric.name, metric.help, labels=own)


def families(per_worker: bool = False) -> dict[str, Family]:
    """An empty family for every pool metric, by name; `per_worker` adds the `worker` label
    to the gauges and the info metric (multiprocess mode)."""
    return {metric.name: family(metric, per_worker) for metric in m.ALL}


class PoolCollector(Collector):
    """One per registry; every pool instrumented into that registry is a source of it."""

    def __init__(self) -> None:
        self._sources: dict[str, PoolSource] = {}
        self._lock = threading.Lock()

    def add(self, source: PoolSource) -> None:
        with self._lock:
            if source.name in self._sources:
                raise ValueError(f"a pool named {source.name!r} is already instrumented")
            self._sources[source.name] = source

    def remove(self, name: str) -> None:
        with self._lock:
            self._sources.pop(name, None)

    def names(self) -> set[str]:
        with self._lock:
            return set(self._sources)

    def describe(self) -> Iterable[Family]:
        return list(families().values())

    def collect(self) -> Iterator[Family]:
        with self._lock:
            sources = sorted(self._sources.values(), key=lambda s: s.name)
        found = families()
        for source in sources:
            # a copy, so the families below agree; not atomic (see PoolStats.snapshot)
            stats = source.stats.snapshot()
            add_worker_samples(found, source.name, stats, dict(source.info))
            add_total_samples(found, source.name, stats, source.exemplars.snapshot())
            if source.routes is not None:
                add_route_samples(found, source.name, source.routes.serve())
        yield from found.values()


# The one mapping from PoolStats to metric families, in two halves because multiprocess mode
# serves them differently: what describes one worker's pool now (gauges, capacity, info; one
# series per worker there) and what adds up (counters and histograms; summed over every
# worker that ever ran there). The in-process collector serves both for each pool.


def add_worker_samples(
    f: dict[str, Any], pool: str, s: PoolStats, info: dict[str, str], extra: Sequence[str] = ()
) -> None:
    """The gauges, capacity and info of one pool (a snapshot: see PoolStats.snapshot);
    `extra` are the values of the labels `families(per_worker=True)` adds."""
    labels = info_labels(info, s.isolation)
    for metric, own, value in worker_rows(s):
        f[metric.name].add_metric([pool, *own, *extra], labels if metric is m.INFO else value)


def info_labels(info: dict[str, str], isolation: int) -> dict[str, str]:
    """The info metric's labels: what the pool is and its settings (`info`), with the
    isolation level once known (`isolation`: 1 + its index in metrics.ISOLATION_LEVELS)."""
    if 0 < isolation <= len(m.ISOLATION_LEVELS):
        return {**info, "isolation_level": m.ISOLATION_LEVELS[isolation - 1]}
    return info


class Gauges(Protocol):
    """What worker_rows reads: a PoolStats, or a worker's slots (multiprocess/workergauges.py)."""

    @property
    def in_use(self) -> float: ...
    @property
    def idle(self) -> float: ...
    @property
    def waiting(self) -> float: ...
    @property
    def oldest_checkout_started(self) -> float: ...
    @property
    def opening(self) -> float: ...
    @property
    def capacity(self) -> Capacity | None: ...
    @property
    def recycle_seconds(self) -> float | None: ...
    @property
    def isolation(self) -> int: ...
    @property
    def overflow(self) -> float: ...


def worker_rows(
    s: Gauges, now: float | None = None
) -> list[tuple[m.Metric, tuple[str, ...], float]]:
    """(metric, its label values between `pool` and the per-worker ones, value) of each
    sample describing one pool now, in exposition order (the info metric's value is its
    labels, given apart)."""
    rows: list[tuple[m.Metric, tuple[str, ...], float]] = [
        (m.CONNECTIONS, ("in_use",), s.in_use),
        (m.CONNECTIONS, ("idle",), s.idle),
        (m.WAITING, (), s.waiting),
        (m.OPENING, (), s.opening),
        (m.OLDEST_CHECKOUT, (), oldest_checkout_age(s.oldest_checkout_started, now)),
        (m.INFO, (), 1.0),
    ]
    recycle = s.recycle_seconds
    if recycle is not None:
        rows.append((m.RECYCLE, (), recycle))
    cap = s.capacity
    if cap is not None:
        rows += [
            (m.OVERFLOW, (), s.overflow),
            (m.SIZE, (), cap.size),
            (m.MAX_OVERFLOW, (), cap.max_overflow),
            (m.MAX_CONNECTIONS, (), cap.max_connections),
            (m.TIMEOUT, (), cap.timeout),
        ]
    return rows


def add_total_samples(
    f: dict[str, Any], pool: str, s: PoolStats, exemplars: Latest | None = None
) -> None:
    """The counters and histograms of one pool (a snapshot: see PoolStats.snapshot), the
    histograms' buckets with their latest `exemplars` (exemplars.py) where there are some."""
    counters = {
        m.CHECKOUTS: s.checkouts,
        m.WAITED_CHECKOUTS: s.waited,
        m.CHECKOUT_TIMEOUTS: s.timeouts,
        m.CHECKOUT_CANCELLATIONS: s.cancellations,
        m.CHECKOUT_ERRORS: s.checkout_errors,
        m.CONNECTS: s.connects,
        m.CONNECT_ERRORS: s.connect_errors,
        m.DETACHES: s.detaches,
        m.LONG_CHECKOUTS: s.long_checkouts,
        m.GC_RETURNED: s.gc_returned,
    }
    latest = exemplars or {}
    histograms = {
        m.HOLD: (bucket_rows(s.hold, latest.get(HOLD)), s.hold.sum),
        m.CONNECT_TIME: (s.connect_time.cumulative(), s.connect_time.sum),
    }
    for metric, value in counters.items():
        f[metric.name].add_metric([pool], value)
    for outcome, series in WAIT_SERIES.items():  # each outcome's wait: a PoolStats field
        wait: Histogram = getattr(s, series)
        buckets = bucket_rows(wait, latest.get(series))
        f[m.CHECKOUT_WAIT.name].add_metric([pool, outcome], buckets, wait.sum)
    for metric, (buckets, total) in histograms.items():
        f[metric.name].add_metric([pool], buckets, total)
    for reason, value in close_reasons(s).items():
        f[m.CLOSES.name].add_metric([pool, reason], value)
    for soft, value in sorted(s.invalidations.items()):
        f[m.INVALIDATIONS.name].add_metric([pool, str(soft).lower()], value)
    for hook, value in sorted(s.hook_errors.items()):
        f[m.HOOK_ERRORS.name].add_metric([pool, hook], value)


def bucket_rows(h: Histogram, traced: Sequence[Traced | None] | None) -> list[Any]:
    """A histogram's (le, cumulative count) pairs, each a triple with its bucket's exemplar
    where `traced` (exemplars.Latest's list for it) has one: prometheus-client then writes it
    in the OpenMetrics format (the text format has no exemplars)."""
    pairs = h.cumulative()
    if not traced or not any(traced):
        return pairs
    return [
        (le, count) if t is None else (le, count, t.exemplar())
        for (le, count), t in zip(pairs, traced, strict=True)
    ]


def close_reasons(s: PoolStats) -> dict[str, int]:
    """The closes by reason, adding up to the total: a worker file of a release before the
    reasons holds only the total, and its closes are counted as `other`."""
    reasons = {reason: s.close_reasons.get(reason, 0) for reason in m.CLOSE_REASONS}
    reasons[m.OTHER_CLOSE] += max(0, s.closes - sum(s.close_reasons.values()))
    return reasons


def add_route_samples(f: dict[str, Any], pool: str, served: list[tuple[str, Totals]]) -> None:
    """The counters by route of one pool: the routes a RouteCap serves, then (other)."""
    for route, (checkouts, seconds, waited) in served:
        f[m.ROUTE_CHECKOUTS.name].add_metric([pool, route], checkouts)
        f[m.ROUTE_HOLD.name].add_metric([pool, route], seconds)
        f[m.ROUTE_WAITED.name].add_metric([pool, route], waited)


def oldest_checkout_age(started: float, now: float | None = None) -> float:
    """The age at scrape time of a checkout that began at Unix time `started` (0: none)."""
    if not started:
        return 0.0
    return max(0.0, (time.time() if now is None else now) - started)


_collectors: weakref.WeakKeyDictionary[CollectorRegistry, PoolCollector] = (
    weakref.WeakKeyDictionary()
)
_collectors_lock = threading.Lock()


def collector_for(registry: CollectorRegistry) -> PoolCollector:
    """The registry's pool collector, registered on first use."""
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = PoolCollector()
            registry.register(collector)
            _collectors[registry] = collector
        return collector
