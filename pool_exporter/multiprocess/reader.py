"""Scrape-time view of a multiprocess directory: drop dead workers, then merge the rest.

The merging is prometheus-client's own `MultiProcessCollector`; this adds the liveness pass
before it (liveness.py) and reports on both as `pool_exporter_multiprocess_*`.
"""

from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from time import perf_counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pool_exporter import metrics as m
from pool_exporter.collector import oldest_checkout_age

from . import liveness

log = logging.getLogger("pool_exporter")


def check_directory(path: str) -> str:
    """The directory, or a ValueError naming what is wrong with it (the sidecar removes the
    files of dead workers, so it needs to write there)."""
    if not path:
        raise ValueError(
            "no multiprocess directory: set PROMETHEUS_MULTIPROC_DIR (the same value the "
            "application has) or pass --multiproc-dir"
        )
    if not os.path.isdir(path):
        raise ValueError(f"multiprocess directory {path} does not exist or is not a directory")
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise ValueError(
            f"multiprocess directory {path} is not readable and writable by this user "
            "(the sidecar removes the files of dead workers)"
        )
    return path


class WorkersCollector(Collector):
    """The merged metrics of every worker writing into `path`, live gauges of live ones only."""

    def __init__(self, path: str) -> None:
        self.path = check_directory(path)
        self._merge = MultiProcessCollector(None, path)  # type: ignore[no-untyped-call]
        self._lock = threading.Lock()
        self._dead_total = 0
        self._failing = False

    def describe(self) -> Iterable[Metric]:
        # Only the sidecar's own families: the merged names are known at scrape time only.
        return list(self._own(0, 0.0, 0, 0))

    def collect(self) -> Iterator[Metric]:
        t0 = perf_counter()
        merged: list[Metric] = []
        up, files, live = 1, 0, 0
        with self._lock:  # two scrapes at once must not reap the same pid twice
            try:
                reaped = liveness.reap(self.path)
                live = len(reaped.live)
                self._dead_total += len(reaped.dead)
                if reaped.dead:
                    log.info("dropped the gauges of exited workers %s", reaped.dead)
                files = len(glob.glob(os.path.join(self.path, "*.db")))
                merged = [
                    with_ages(family)
                    for family in self._merge.collect()  # type: ignore[no-untyped-call]
                ]
                if self._failing:
                    log.info("the metric files in %s can be merged again", self.path)
                self._failing = False
            except Exception as exc:
                up, merged = 0, []
                level = logging.DEBUG if self._failing else logging.ERROR
                self._failing = True
                log.log(
                    level,
                    "cannot merge the metric files in %s (pool_exporter_multiprocess_up 0): %s: %s",
                    self.path,
                    type(exc).__name__,
                    exc,
                )
        yield from merged
        yield from self._own(up, perf_counter() - t0, files, live)

    def _own(self, up: int, seconds: float, files: int, live: int) -> Iterator[Metric]:
        for metric, value in (
            (m.MULTIPROCESS_UP, up),
            (m.MULTIPROCESS_SCRAPE, seconds),
            (m.MULTIPROCESS_FILES, files),
            (m.MULTIPROCESS_LIVE_WORKERS, live),
        ):
            yield GaugeMetricFamily(metric.name, metric.help, value=value)
        dead = m.MULTIPROCESS_DEAD_WORKERS
        yield CounterMetricFamily(dead.name, dead.help, value=self._dead_total)


def with_ages(family: Metric) -> Metric:
    """Workers store when their oldest checkout began; the age is the scrape's business."""
    if family.name != m.OLDEST_CHECKOUT_STARTED.name:
        return family
    now = time.time()
    ages = GaugeMetricFamily(m.OLDEST_CHECKOUT.name, m.OLDEST_CHECKOUT.help)
    for sample in family.samples:
        ages.add_sample(
            m.OLDEST_CHECKOUT.name, sample.labels, oldest_checkout_age(sample.value, now)
        )
    return ages
