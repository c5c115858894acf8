"""Multiprocess mode: PoolStats that also write to prometheus-client's per-process files.

prometheus-client merges what each worker writes under PROMETHEUS_MULTIPROC_DIR; custom
collectors are not merged, so here every change is pushed to real prometheus-client metrics.
Gauges use `liveall` (one series per live worker, label `pid`): a worker's pool saturates on
its own. Counters and histograms are summed across workers by prometheus-client.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from pool_exporter import metrics as m
from pool_exporter.stats import CANCELLED, CONNECT_ERROR, TIMEOUT, Capacity, PoolStats

from . import liveness

_families: dict[str, Any] = {}
_families_lock = threading.Lock()


def family(metric: m.Metric) -> Any:
    """The process-wide prometheus-client metric for `metric` (not in any registry: in this
    mode the values live in files that MultiProcessCollector reads)."""
    with _families_lock:
        existing = _families.get(metric.name)
        if existing is not None:
            return existing
        labels = list(metric.label_names)
        created: Any
        if metric.kind == "counter":
            created = Counter(metric.name, metric.help, labels, registry=None)
        elif metric.kind == "histogram":
            created = Histogram(
                metric.name, metric.help, labels, registry=None, buckets=metric.buckets
            )
        else:  # gauges, and the info metric as a gauge of 1 (Info has no multiprocess mode)
            created = Gauge(
                metric.sample,
                metric.help,
                labels,
                registry=None,
                multiprocess_mode=metric.multiprocess_mode,  # type: ignore[arg-type]
            )
        _families[metric.name] = created
        return created


class MultiprocessPoolStats(PoolStats):
    """PoolStats whose every change is also written to this worker's metric files.

    Each update and the write of the gauges it changed happen under one reentrant lock, so two
    threads cannot write their gauge values out of order; reentrant, because a garbage-collected
    connection's checkin can run inside another update on the same thread.
    """

    def __init__(self, name: str, info: dict[str, str]) -> None:
        self.name = name
        self.info = info
        self._children: dict[tuple[str, ...], Any] = {}
        self._published: dict[str, float] = {}
        super().__init__()
        self._lock = threading.RLock()

    def _child(self, metric: m.Metric, *labels: str) -> Any:
        key = (metric.name, *labels)
        child = self._children.get(key)
        if child is None:  # labels() costs more than the write it prepares: look it up once
            child = self._children[key] = family(metric).labels(self.name, *labels)
        return child

    def reset(self) -> None:
        # Before the first gauge write of this process (or of a forked child): a reaper only
        # deletes the files of a pid whose lock it can take.
        liveness.hold()
        super().reset()
        self._published = {}
        # prometheus-client starts a forked child's files at zero; publish what is known.
        self._child(m.INFO, *self.info.values()).set(1)
        for metric in (m.CHECKOUTS, m.CHECKOUT_TIMEOUTS, m.CHECKOUT_CANCELLATIONS,
                       m.CHECKOUT_ERRORS, m.CONNECTS, m.CONNECT_ERRORS, m.CLOSES, m.DETACHES,
                       m.CHECKOUT_WAIT, m.HOLD, m.CONNECT_TIME):  # fmt: skip
            self._child(metric)  # every series exists at 0 from the start
        for soft in ("false", "true"):
            self._child(m.INVALIDATIONS, soft)
        for hook in m.HOOKS:
            self._child(m.HOOK_ERRORS, hook)
        self.configure(getattr(self, "capacity", None))

    def configure(self, capacity: Capacity | None) -> None:
        with self._lock:
            super().configure(capacity)
            if capacity is not None:
                self._child(m.SIZE).set(capacity.size)
                self._child(m.MAX_OVERFLOW).set(capacity.max_overflow)
                self._child(m.MAX_CONNECTIONS).set(capacity.max_connections)
                self._child(m.TIMEOUT).set(capacity.timeout)
            self._publish()

    def _publish(self) -> None:
        """Write the gauges whose values changed since the last write (each is an mmap write)."""
        values = {"in_use": self.in_use, "idle": self.idle, "waiting": self.waiting}
        if self.capacity is not None:
            values["overflow"] = self.overflow
        for what, number in values.items():
            if self._published.get(what) != number:
                self._published[what] = number
                if what == "waiting":
                    self._child(m.WAITING).set(number)
                elif what == "overflow":
                    self._child(m.OVERFLOW).set(number)
                else:
                    self._child(m.CONNECTIONS, what).set(number)

    def enter(self) -> None:
        with self._lock:
            super().enter()
            self._publish()

    def checked_out(self, wait: float, first: bool, was_idle: bool) -> None:
        with self._lock:
            super().checked_out(wait, first, was_idle)
            self._publish()
            self._child(m.CHECKOUTS).inc()
            self._child(m.CHECKOUT_WAIT).observe(wait)

    def failed(self, reason: str) -> None:
        with self._lock:
            super().failed(reason)
            self._publish()
            if reason == TIMEOUT:
                self._child(m.CHECKOUT_TIMEOUTS).inc()
            elif reason == CANCELLED:
                self._child(m.CHECKOUT_CANCELLATIONS).inc()
            else:
                self._child(m.CHECKOUT_ERRORS).inc()
                if reason == CONNECT_ERROR:
                    self._child(m.CONNECT_ERRORS).inc()

    def checked_in(self, hold: float | None, now_idle: bool) -> None:
        with self._lock:
            super().checked_in(hold, now_idle)
            self._publish()
            if hold is not None:
                self._child(m.HOLD).observe(hold)

    def detached(self, hold: float | None) -> None:
        with self._lock:
            super().detached(hold)
            self._publish()
            self._child(m.DETACHES).inc()
            if hold is not None:
                self._child(m.HOLD).observe(hold)

    def connected(self, seconds: float) -> None:
        with self._lock:
            super().connected(seconds)
            self._child(m.CONNECTS).inc()
            self._child(m.CONNECT_TIME).observe(seconds)

    def closed(self, was_idle: bool) -> None:
        with self._lock:
            super().closed(was_idle)
            self._publish()
            self._child(m.CLOSES).inc()

    def invalidated(self, soft: bool) -> None:
        with self._lock:
            super().invalidated(soft)
            self._child(m.INVALIDATIONS, str(soft).lower()).inc()

    def hook_failed(self, hook: str) -> None:
        with self._lock:
            super().hook_failed(hook)
            self._child(m.HOOK_ERRORS, hook).inc()
