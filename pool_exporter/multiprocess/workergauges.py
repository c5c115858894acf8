"""One live worker's gauges at a scrape: their values from the slots read of its stats file
(filereader.py), their label sets made once for the life of the file.

What a sample means and which labels it has is collector.py's (`worker_rows`, `family`);
this module only avoids doing it again at every scrape: a stats file's pool, info and worker
label never change, so its `Labelled` samples (rendered.py) are made on first use and kept,
one list with capacity and one without (a pool's capacity comes and goes with configure()).
"""

from __future__ import annotations

from typing import Any

from pool_exporter import collector
from pool_exporter import metrics as m
from pool_exporter.rendered import Labelled
from pool_exporter.stats import Capacity, PoolStats

from . import filereader, layout, slots

# The info metric of a worker's pool carries its pid: the join from a log line to a series.
PID_LABEL = "pid"

_IN_USE = layout.OFFSETS["in_use"]
_IDLE = layout.OFFSETS["idle"]
_WAITING = layout.OFFSETS["waiting"]
_OPENING = layout.OFFSETS["opening"]
_RECYCLE = layout.OFFSETS["recycle"]
_ISOLATION = layout.OFFSETS["isolation"]
_OLDEST = layout.OFFSETS["oldest_checkout_started"]


class SlotGauges:
    """What collector.worker_rows reads of one worker's pool, taken from its slots."""

    __slots__ = (
        "capacity",
        "idle",
        "in_use",
        "isolation",
        "oldest_checkout_started",
        "opening",
        "recycle_seconds",
        "waiting",
    )

    overflow = PoolStats.overflow

    def __init__(self, values: list[float], capacity: Capacity | None) -> None:
        self.in_use = values[_IN_USE]
        self.idle = values[_IDLE]
        self.waiting = values[_WAITING]
        self.opening = values[_OPENING]
        self.oldest_checkout_started = values[_OLDEST]
        self.capacity = capacity
        # -1: not set, also in a file of a version before the settings (filereader._absent)
        recycle = values[_RECYCLE]
        self.recycle_seconds: float | None = recycle if recycle >= 0 else None
        self.isolation = int(values[_ISOLATION])


class WorkerFile:
    """What a live stats file's header says, and its samples' label sets."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.pool = str(meta["pool"])
        self.pid = int(meta["pid"])
        self.token = str(meta["token"])
        info = {str(k): str(v) for k, v in dict(meta["info"]).items()}
        self.info = {**info, PID_LABEL: str(self.pid)}
        worker = meta.get("worker")
        # A file of a version without slots, or a header someone wrote: the pid's label.
        valid = isinstance(worker, str) and slots.VALID.match(worker) is not None
        self.header_worker = str(worker) if valid else slots.fallback(self.pid)
        self.worker = self.header_worker
        self._labelled: dict[tuple[int, str, int], list[Labelled]] = {}

    def gauges(self, values: list[float]) -> SlotGauges:
        return SlotGauges(values, filereader.capacity(values))

    def labelled(
        self, rows: list[tuple[m.Metric, tuple[str, ...], float]], isolation: int = 0
    ) -> list[Labelled]:
        """The Labelled sample of each of `rows` (collector.worker_rows of this file), the
        info metric's with the isolation level `isolation` (collector.info_labels)."""
        # with capacity or without, with pool_recycle or without; the level once known
        key = (len(rows), self.worker, isolation)
        found = self._labelled.get(key)
        if found is None:
            info = collector.info_labels(self.info, isolation)
            found = [self._sample(metric, own, info) for metric, own, _ in rows]
            self._labelled[key] = found
        return found

    def _sample(self, metric: m.Metric, own: tuple[str, ...], info: dict[str, str]) -> Labelled:
        family: Any = collector.family(metric, per_worker=True)  # a Gauge/InfoMetricFamily
        value = info if metric is m.INFO else 0
        family.add_metric([self.pool, *own, self.worker], value)
        sample = family.samples[0]
        return Labelled(collector.family(metric, per_worker=True), sample.name, sample.labels)


def unique_labels(files: list[WorkerFile], directory: str) -> None:
    """Give each live process its own worker label. Two can only claim one slot if a slot
    file was removed while its worker held it (the next one creates it again): then the one
    whose token is in the slot's file now keeps the label, and every other takes its pid's,
    so no two series are the same, at every scrape, whatever the pids and the listing's
    order. The slot file is read only then."""
    claims: dict[str, set[int]] = {}
    for f in files:
        f.worker = f.header_worker
        claims.setdefault(f.worker, set()).add(f.pid)
    for worker in [w for w, pids in claims.items() if len(pids) > 1]:
        holder = slots.holder(directory, worker)
        for f in files:
            if f.header_worker == worker and f.token != holder:
                f.worker = slots.fallback(f.pid)
