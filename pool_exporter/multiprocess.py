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

from . import liveness
from . import metrics as m
from .stats import CANCELLED, CONNECT_ERROR, TIMEOUT, Capacity, PoolStats

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
            name = metric.name + "_info" if metric.kind == "info" else metric.name
            created = Gauge(
                name,
                metric.help,
                labels,
                registry=None,
                multiprocess_mode=metric.multiprocess_mode,  # type: ignore[arg-type]
            )
        _families[metric.name] = created
        return created


class MultiprocessPoolStats(PoolStats):
    """PoolStats whose every change is also written to this worker's metric files."""

    def __init__(self, name: str, info: dict[str, str]) -> None:
        self.name = name
        self.info = info
        super().__init__()

    def _child(self, metric: m.Metric, *labels: str) -> Any:
        return family(metric).labels(self.name, *labels)

    def reset(self) -> None:
        # Before the first gauge write of this process (or of a forked child): a reaper only
        # deletes the files of a pid whose lock it can take.
        liveness.hold()
        super().reset()
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
        self._publish()

    def configure(self, capacity: Capacity | None) -> None:
        super().configure(capacity)
        if capacity is not None:
            self._child(m.SIZE).set(capacity.size)
            self._child(m.MAX_OVERFLOW).set(capacity.max_overflow)
            self._child(m.MAX_CONNECTIONS).set(capacity.max_connections)
            self._child(m.TIMEOUT).set(capacity.timeout)

    def _publish(self) -> None:
        with self._lock:
            in_use, idle, waiting, overflow = self.in_use, self.idle, self.waiting, self.overflow
        self._child(m.CONNECTIONS, "in_use").set(in_use)
        self._child(m.CONNECTIONS, "idle").set(idle)
        self._child(m.WAITING).set(waiting)
        if self.capacity is not None:
            self._child(m.OVERFLOW).set(overflow)

    def enter(self) -> None:
        super().enter()
        self._publish()

    def checked_out(self, wait: float, first: bool, was_idle: bool) -> None:
        super().checked_out(wait, first, was_idle)
        self._child(m.CHECKOUTS).inc()
        self._child(m.CHECKOUT_WAIT).observe(wait)
        self._publish()

    def failed(self, reason: str) -> None:
        super().failed(reason)
        if reason == TIMEOUT:
            self._child(m.CHECKOUT_TIMEOUTS).inc()
        elif reason == CANCELLED:
            self._child(m.CHECKOUT_CANCELLATIONS).inc()
        else:
            self._child(m.CHECKOUT_ERRORS).inc()
            if reason == CONNECT_ERROR:
                self._child(m.CONNECT_ERRORS).inc()
        self._publish()

    def checked_in(self, hold: float | None, now_idle: bool) -> None:
        super().checked_in(hold, now_idle)
        if hold is not None:
            self._child(m.HOLD).observe(hold)
        self._publish()

    def detached(self, hold: float | None) -> None:
        super().detached(hold)
        self._child(m.DETACHES).inc()
        if hold is not None:
            self._child(m.HOLD).observe(hold)
        self._publish()

    def connected(self, seconds: float) -> None:
        super().connected(seconds)
        self._child(m.CONNECTS).inc()
        self._child(m.CONNECT_TIME).observe(seconds)

    def closed(self, was_idle: bool) -> None:
        super().closed(was_idle)
        self._child(m.CLOSES).inc()
        self._publish()

    def invalidated(self, soft: bool) -> None:
        super().invalidated(soft)
        self._child(m.INVALIDATIONS, str(soft).lower()).inc()

    def hook_failed(self, hook: str) -> None:
        super().hook_failed(hook)
        self._child(m.HOOK_ERRORS, hook).inc()
