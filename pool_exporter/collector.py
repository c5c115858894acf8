"""Scrape-time collector: turns every instrumented pool's PoolStats into metric families."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    from .stats import PoolStats


class PoolSource:
    """What the collector reads for one pool: its label, its stats and its info labels."""

    __slots__ = ("info", "name", "stats")

    def __init__(self, name: str, stats: PoolStats, info: dict[str, str]) -> None:
        self.name = name
        self.stats = stats
        self.info = info


def _family(metric: m.Metric) -> Family:
    labels = list(metric.label_names)
    if metric.kind == "gauge":
        return GaugeMetricFamily(metric.name, metric.help, labels=labels)
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=labels)
    if metric.kind == "histogram":
        return HistogramMetricFamily(metric.name, metric.help, labels=labels)
    return InfoMetricFamily(metric.name, metric.help, labels=[m.POOL_LABEL])


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
        return [_family(metric) for metric in m.ALL]

    def collect(self) -> Iterator[Family]:
        with self._lock:
            sources = sorted(self._sources.values(), key=lambda s: s.name)
        families = {metric.name: _family(metric) for metric in m.ALL}
        for source in sources:
            _add_samples(families, source)
        yield from families.values()


def _add_samples(f: dict[str, Any], source: PoolSource) -> None:
    s = source.stats
    pool = source.name
    with s._lock:  # one consistent snapshot per pool
        in_use, idle, waiting, overflow = s.in_use, s.idle, s.waiting, s.overflow
        counters = {
            m.CHECKOUTS: s.checkouts,
            m.CHECKOUT_TIMEOUTS: s.timeouts,
            m.CHECKOUT_CANCELLATIONS: s.cancellations,
            m.CHECKOUT_ERRORS: s.checkout_errors,
            m.CONNECTS: s.connects,
            m.CONNECT_ERRORS: s.connect_errors,
            m.CLOSES: s.closes,
            m.DETACHES: s.detaches,
        }
        histograms = {
            m.CHECKOUT_WAIT: (s.wait.cumulative(), s.wait.sum),
            m.HOLD: (s.hold.cumulative(), s.hold.sum),
            m.CONNECT_TIME: (s.connect_time.cumulative(), s.connect_time.sum),
        }
        invalidations = dict(s.invalidations)
        hook_errors = dict(s.hook_errors)
    f[m.CONNECTIONS.name].add_metric([pool, "in_use"], in_use)
    f[m.CONNECTIONS.name].add_metric([pool, "idle"], idle)
    f[m.WAITING.name].add_metric([pool], waiting)
    for metric, value in counters.items():
        f[metric.name].add_metric([pool], value)
    for metric, (buckets, total) in histograms.items():
        f[metric.name].add_metric([pool], buckets, total)
    for soft, value in sorted(invalidations.items()):
        f[m.INVALIDATIONS.name].add_metric([pool, str(soft).lower()], value)
    for hook, value in sorted(hook_errors.items()):
        f[m.HOOK_ERRORS.name].add_metric([pool, hook], value)
    f[m.INFO.name].add_metric([pool], source.info)
    cap = s.capacity
    if cap is not None:
        f[m.OVERFLOW.name].add_metric([pool], overflow)
        f[m.SIZE.name].add_metric([pool], cap.size)
        f[m.MAX_OVERFLOW.name].add_metric([pool], cap.max_overflow)
        f[m.MAX_CONNECTIONS.name].add_metric([pool], cap.max_connections)
        f[m.TIMEOUT.name].add_metric([pool], cap.timeout)


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
