"""`mark_event("push")`: one line for the application to mark an event the dashboards annotate."""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge
from prometheus_client.registry import CollectorRegistry

from pool_exporter.multiprocess import directory as multiprocess_dir

from . import metrics as m

__all__ = ["mark_event"]

_lock = threading.Lock()
_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Any, Any]] = (
    weakref.WeakKeyDictionary()
)


def mark_event(
    event: str, *, registry: CollectorRegistry | None = None, at: float | None = None
) -> None:
    """Record that `event` happened now (or at unix time `at`).

    Counts it in `pool_exporter_events_total{event}` and sets
    `pool_exporter_event_last_timestamp_seconds{event}`, which the dashboard draws as an
    annotation at that time. Use a few fixed names ("push", "deploy", "campaign"): each name
    is a label value, and so a series of its own.

    `registry` defaults to prometheus-client's global one. In multiprocess mode
    (PROMETHEUS_MULTIPROC_DIR set) the values go to this process's metric files, whatever the
    registry, as for `instrument()`: the counter is summed across workers, the timestamp is
    the latest any worker marked.
    """
    if not isinstance(event, str) or not event:
        raise ValueError(f"an event name is a non-empty string, not {event!r}")
    when = time.time() if at is None else float(at)
    counter, gauge = _metrics(registry)
    counter.labels(event).inc()
    gauge.labels(event).set(when)


def _metrics(registry: CollectorRegistry | None) -> tuple[Any, Any]:
    # In multiprocess mode the values live in prometheus-client's per-process files, which the
    # reader merges; the metrics are then in no registry of this process (_MULTIPROCESS).
    multiprocess = multiprocess_dir() is not None
    target = _MULTIPROCESS if multiprocess else REGISTRY if registry is None else registry
    with _lock:
        found = _by_registry.get(target)
        if found is None:
            into = None if multiprocess else target
            last = m.EVENT_LAST_TIMESTAMP
            found = _by_registry[target] = (
                Counter(m.EVENTS.name, m.EVENTS.help, m.EVENTS.labels, registry=into),
                Gauge(
                    last.name,
                    last.help,
                    last.labels,
                    registry=into,
                    multiprocess_mode=last.multiprocess_mode,  # type: ignore[arg-type]
                ),
            )
        return found


_MULTIPROCESS = CollectorRegistry(auto_describe=False)
