"""Polls a Prometheus server's alerts and remembers when each alert went pending and firing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class AlertTimes:
    name: str
    severity: str
    pending: float | None = None  # seconds from the watch's zero
    firing: float | None = None


class AlertWatch:
    """A daemon thread asking `fetch()` (a list of Prometheus alert objects, as in
    `/api/v1/alerts`) every `interval` seconds; times are relative to `zero` (a
    `time.monotonic()` reading)."""

    def __init__(
        self,
        fetch: Callable[[], list[dict[str, Any]]],
        *,
        zero: float | None = None,
        interval: float = 0.25,
    ) -> None:
        self.fetch = fetch
        self.zero = time.monotonic() if zero is None else zero
        self.interval = interval
        self.alerts: dict[str, AlertTimes] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="alert-watch", daemon=True)

    def __enter__(self) -> AlertWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def poll(self) -> None:
        try:
            current = self.fetch()
        except Exception:  # a slow or restarting Prometheus must not end the demo
            self.errors += 1
            return
        now = time.monotonic() - self.zero
        with self._lock:
            for alert in current:
                labels = alert.get("labels", {})
                name = labels.get("alertname", "?")
                times = self.alerts.setdefault(name, AlertTimes(name, labels.get("severity", "")))
                if times.pending is None:
                    times.pending = now
                if alert.get("state") == "firing" and times.firing is None:
                    times.firing = now

    def firing(self) -> list[str]:
        """Names of the alerts that have fired so far, in the order they did."""
        with self._lock:
            fired = [a for a in self.alerts.values() if a.firing is not None]
        return [f"{a.name} ({a.severity})" if a.severity else a.name for a in sorted(
            fired, key=lambda a: a.firing or 0.0)]  # fmt: skip

    def snapshot(self) -> list[AlertTimes]:
        with self._lock:
            return sorted(
                (AlertTimes(a.name, a.severity, a.pending, a.firing) for a in self.alerts.values()),
                key=lambda a: (a.firing is None, a.firing or 0.0, a.name),
            )

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.poll()
