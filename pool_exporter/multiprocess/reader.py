"""Scrape-time view of a multiprocess directory: fold the exited workers, read the live ones.

Per scrape, under the archive lock (archive.py): drop the prometheus-client gauges of dead
processes (liveness.py), remove the temporary files of exited writers, fold the stats files of
exited workers into the archive and delete them, then read the live workers' stats files (with
pread: a file truncated meanwhile is skipped, never a SIGBUS). A worker whose lock cannot be
tried is neither live nor exited: its counters are read where they are, never folded. Pool
metrics are built by the same mapping the in-process collector uses (collector.py): counters
and histograms summed over the archive and every live worker, gauges one series per live
worker (`worker`, its slot: slots.py; the per-worker families come as rendered.Rendered, see
workergauges.py). The application's own prometheus-client metrics (*.db) are merged by
prometheus-client. The work is bounded by the live workers: an exited worker costs one fold,
once. A worker's exemplar file of a pool (exemplarfile.py) is read beside its stats file, and
the newest exemplar of each bucket among the workers is served; an exited worker's is removed.

Counts by route (`instrument(engine, route=...)`) are summed by route name over the archive
and every live worker, and a RouteCap per pool (routes.py), kept from scrape to scrape,
decides which are served by name. So that a served route's series never goes down, the
archive keeps the routes served now by name when it folds an exited worker (archive.folded);
the others may be summed there without their names, which moves nothing served.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from time import perf_counter

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from pool_exporter import collector
from pool_exporter import metrics as m
from pool_exporter.exemplars import Entries, newest
from pool_exporter.rendered import Rendered
from pool_exporter.routes import (
    DEFAULT_MAX_ROUTES,
    TRACKED_PER_SERIES,
    RouteCap,
    RouteTotals,
    Totals,
    sum_by_name,
)
from pool_exporter.stats import PoolStats

from . import archive, exemplarfile, filenames, filereader, header, layout, liveness, workergauges
from .files import BadFiles, open_regular, remove

log = logging.getLogger("pool_exporter")

# prometheus-client's files start at 1 MiB and double; beyond this one is not a metric file.
_DB_MAX_BYTES = 1 << 30
# A stats file of any layout version this reader can read (layout.Shape bounds the slots).
_STATS_MAX_BYTES = 128 << 10
# The names prometheus-client gives its files: the type (and gauge mode) decides the merge.
_DB_NAME = re.compile(r"^(counter|histogram|summary|gauge_[a-z]+)_\d+\.db$")


def check_directory(path: str) -> str:
    """The directory, or a ValueError naming what is wrong with it (the sidecar folds the
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
    try:
        os.listdir(path)
    except OSError as exc:
        raise ValueError(f"cannot list multiprocess directory {path}: {exc.strerror}") from None
    return path


@dataclass
class Worker:
    """One live worker's pool: what its stats file's header says, its slots now, and its
    exemplars if it has an exemplar file."""

    file: workergauges.WorkerFile
    values: list[float]
    active: bool
    routes: RouteTotals | None = None
    route_limit: int = 0  # its max_routes, where it counts checkouts by route
    exemplars: Entries = ()


@dataclass
class View:
    """What one scrape found."""

    totals: dict[str, PoolStats] = field(default_factory=dict)
    # Per pool that counts checkouts by route: the series to serve (RouteCap.serve).
    routes: dict[str, list[tuple[str, Totals]]] = field(default_factory=dict)
    workers: list[Worker] = field(default_factory=list)
    live_pids: int = 0
    files: int = 0
    merged: list[Metric] = field(default_factory=list)


class _Known:
    """A stats file's header page and what it says, parsed once while it stays the same: how
    to decode its slots, and the worker's labels rendered for the scrape (WorkerFile); the
    file's descriptor while the reader keeps it open between scrapes; and its exemplar file's
    View (exemplarfile.py), once there is one."""

    def __init__(self, page: bytes) -> None:
        self.page = page
        self.fd: int | None = None
        meta, shape = header.parse(page)
        self.decoder = filereader.decoder(shape)
        self.file = workergauges.WorkerFile(meta)
        self.exemplars: exemplarfile.View | None = None


class WorkersCollector(Collector):
    """The metrics of every worker writing into `path`: pool totals across all of them,
    exited ones included, gauges of live ones only."""

    def __init__(self, path: str) -> None:
        self.path = check_directory(path)
        self._lock = threading.Lock()
        self._dead_total = 0
        self._failing = False
        self._bad = BadFiles()
        self._archive = archive.Reader(path)
        self._known: dict[str, _Known] = {}
        # Per pool that counts checkouts by route: which routes are served, from scrape to
        # scrape (its limit is the pool's max_routes).
        self._caps: dict[str, RouteCap] = {}
        # Opening 640 files costs a big host's scrape a third of its time, so the reader keeps
        # live files open, up to half the process's descriptor limit: past that (a fleet larger
        # than the limit allows, or a limit set low), a file is opened for its read only.
        self._keep_open = resource.getrlimit(resource.RLIMIT_NOFILE)[0] // 2
        self._kept = 0
        weakref.finalize(self, _close_all, self._known)

    def describe(self) -> Iterable[Metric]:
        # Only the sidecar's own families: the merged names are known at scrape time only.
        return list(self._own(0, 0.0, 0, 0))

    def collect(self) -> Iterator[Metric]:
        for family in self.rendered():
            yield family.as_family() if isinstance(family, Rendered) else family

    def rendered(self) -> Iterator[Metric | Rendered]:
        """collect()'s families, the per-worker ones as `Rendered` (rendered.py)."""
        t0 = perf_counter()
        view, up = View(), 1
        with self._lock:  # one scrape at a time in this process; the flock does it across
            self._bad.start()
            try:
                view = self._scan()
                if self._failing:
                    log.info("the metric files in %s can be read again", self.path)
                self._failing = False
            except Exception as exc:
                up = 0
                level = logging.DEBUG if self._failing else logging.ERROR
                self._failing = True
                log.log(
                    level,
                    "cannot read the metric files in %s (pool_exporter_multiprocess_up 0): %s: %s",
                    self.path,
                    type(exc).__name__,
                    exc,
                )
        if up:
            yield from _pool_families(view)
            yield from view.merged
        yield from self._own(up, perf_counter() - t0, view.files, view.live_pids)

    # -- one scrape --

    def _scan(self) -> View:
        view = View()
        with archive.locked(self.path):
            names = os.listdir(self.path)  # before the liveness checks: see _split
            # Exemplar files go with their stats files, and only the pairing reads their
            # names: the other passes over the listing need not match them.
            exemplars = {n for n in names if n.endswith(".exemplars")}
            names = [n for n in names if n not in exemplars]
            reaped = liveness.reap(self.path, names, self._bad)
            self._dead_total += len(reaped.dead)
            if reaped.dead:
                shown = ", ".join(map(str, reaped.dead[:10]))
                more = f" and {len(reaped.dead) - 10} more" if len(reaped.dead) > 10 else ""
                log.info("workers %s%s exited; their counts are kept", shown, more)
            live, dead, unknown = _split(names, reaped)
            # What is read below stays parsed and open until the next scrape; the rest is
            # dropped (an exited worker's file is read once more, to be folded).
            self._forget_all_but({*live, *unknown})
            _remove_temporaries(self.path, names, reaped)
            archive.remove_temporaries(self.path, names)
            store = self._fold(dead, set(names), exemplars)
            self._read_live(sorted(live), view, exemplars, gauges=True)
            # A worker whose liveness cannot be told: its counts are served from its file
            # (never folded, so never twice), its gauges are not (it may have exited).
            self._read_live(unknown, view, exemplars, gauges=False)
            view.totals = _totals(store, view.workers)
            view.routes = self._routes(store, view.workers)
            workergauges.unique_labels([w.file for w in view.workers if w.active], self.path)
        view.live_pids = len(reaped.live)
        view.merged, dbs = self._merge_db(names)
        view.files += dbs
        return view

    def _fold(self, dead: list[str], present: set[str], exemplars: set[str]) -> archive.Archive:
        for name in dead:  # an exited worker's exemplars go with it, before its stats file
            exemplar_file = filenames.exemplar_file(name)
            if exemplar_file in exemplars:
                try:
                    remove(os.path.join(self.path, exemplar_file))
                except OSError:  # another user's, in a sticky directory: never read again
                    self._bad(os.path.join(self.path, exemplar_file), "cannot_remove")
        store = self._archive.load(self._bad)
        found: dict[str, archive.Dead] = {}
        for name in dead:
            if name not in store.folded:
                got = self._read_dead(name)
                if got is not None:
                    found[name] = got
        served = {pool: set(cap.served) for pool, cap in self._caps.items()}
        if found and store.sound:
            new = archive.folded(store, found, present, served)
            try:
                self._archive.replace(self.path, new)  # counted there first, deleted after
            except OSError as exc:
                log.debug("cannot replace the archive: %s", exc)
                self._bad(self._archive.path, "cannot_remove")
            else:
                store, found = new, {}
        for name in dead:
            if name in store.folded:
                try:
                    remove(os.path.join(self.path, name))
                except OSError:  # the archive remembers it, so it is never counted twice
                    self._bad(os.path.join(self.path, name), "cannot_remove")
        # Not folded (an archive that cannot be read or replaced is never overwritten: its
        # totals would be lost): the dead files stay, and count from where they are.
        return archive.folded(store, found, present, served) if found else store

    def _routes(
        self, store: archive.Archive, workers: list[Worker]
    ) -> dict[str, list[tuple[str, Totals]]]:
        """Per pool that counts checkouts by route, the series to serve: the routes summed by
        name over the archive and the workers, through the pool's RouteCap."""
        tables: dict[str, list[RouteTotals]] = {p: [r] for p, r in store.routes.items()}
        limits = dict(store.route_limits)
        for worker in workers:
            if worker.routes is not None:
                pool = worker.file.pool
                tables.setdefault(pool, []).append(worker.routes)
                limits[pool] = max(limits.get(pool, 0), worker.route_limit)
        served = {}
        for pool, parts in tables.items():
            cap = self._caps.get(pool)
            # The largest max_routes of the pool's workers, exited ones included (an archive
            # of an older version does not say it: the last one seen, else the default).
            limit = limits.get(pool) or (cap.limit if cap is not None else DEFAULT_MAX_ROUTES)
            if cap is None or cap.limit != limit:
                cap = self._caps[pool] = RouteCap(limit)  # a new max_routes: chosen again
            served[pool] = cap.serve(*sum_by_name(parts))
        return served

    def _read_dead(self, name: str) -> archive.Dead | None:
        got = self._read_one(name, cache=False)
        if got is None:
            return None
        known, values, routes = got
        return known.file.pool, values, routes, known.decoder.route_entries // TRACKED_PER_SERIES

    def _read_live(self, names: list[str], view: View, exemplars: set[str], gauges: bool) -> None:
        for name in names:
            got = self._read_one(name)
            if got is None:
                continue
            known, values, routes = got
            active = bool(values[layout.ACTIVE]) and gauges
            limit = known.decoder.route_entries // TRACKED_PER_SERIES
            entries: Entries = ()
            exemplar_file = filenames.exemplar_file(name)
            if exemplar_file in exemplars:
                entries = self._read_exemplars(exemplar_file, known)
            view.workers.append(Worker(known.file, values, active, routes, limit, entries))
            view.files += 1

    def _read_exemplars(self, name: str, known: _Known) -> Entries:
        """A worker's exemplar file, read whole with pread; none when it cannot be read as
        one (counted as a bad file): its exemplars are missing, the counts are not. Its View
        stays with the stats file's `known`, so an unchanged file is not decoded again, and
        its descriptor stays open while the stats file's does, its records read again at each
        scrape."""
        found = known.exemplars
        if found is not None and found.fd is not None:
            try:
                return found.records(os.pread(found.fd, found.size, exemplarfile.HEADER_BYTES))
            except (OSError, ValueError):
                self._bad(os.path.join(self.path, name), "format")
                self._close_exemplars(known)
                return ()
        path = os.path.join(self.path, name)
        fd = open_regular(path, self._bad, exemplarfile.MAX_BYTES)
        if fd is None:
            return ()
        found = known.exemplars = found or exemplarfile.View()
        try:
            entries = found.read(os.pread(fd, exemplarfile.MAX_BYTES, 0))
        except (OSError, ValueError):
            os.close(fd)
            self._bad(path, "format")
            known.exemplars = None
            return ()
        if known.fd is not None and self._kept < self._keep_open:
            found.fd, self._kept = fd, self._kept + 1
        else:
            os.close(fd)
        return entries

    def _close_exemplars(self, known: _Known) -> None:
        found, known.exemplars = known.exemplars, None
        if found is not None and found.fd is not None:
            os.close(found.fd)
            self._kept -= 1

    def _read_one(
        self, name: str, cache: bool = True
    ) -> tuple[_Known, list[float], RouteTotals | None] | None:
        """A worker's file, read with pread (filereader.read): a file truncated meanwhile is
        skipped and counted, never a SIGBUS. With `cache` (a live worker's), its parsed header
        is kept, and the file kept open while the descriptor budget allows (a worker's file is
        never replaced under its name: a new instrumentation or a fork makes a new name)."""
        path = os.path.join(self.path, name)
        known = self._known.get(name) if cache else None
        if known is not None and known.fd is not None:
            try:
                return known, *filereader.read_all(known.fd, known.decoder)
            except (OSError, ValueError):
                self._bad(path, "format")
                self._forget(name)
                return None
        fd = open_regular(path, self._bad, _STATS_MAX_BYTES)
        if fd is None:
            return None
        try:
            page = os.pread(fd, layout.HEADER_BYTES, 0)
            if known is None or known.page != page:
                known = _Known(page)
                if cache:
                    self._known[name] = known
            values, routes = filereader.read_all(fd, known.decoder)
        except (OSError, ValueError):
            os.close(fd)
            self._bad(path, "format")
            if cache:  # one kept has no descriptor here: one kept open is read above
                self._known.pop(name, None)
            return None
        if cache and self._kept < self._keep_open:
            known.fd, self._kept = fd, self._kept + 1
        else:
            os.close(fd)
        return known, values, routes

    def _forget_all_but(self, names: set[str]) -> None:
        for name in [n for n in self._known if n not in names]:
            self._forget(name)

    def _forget(self, name: str) -> None:
        known = self._known.pop(name, None)
        if known is not None:
            self._close_exemplars(known)
            if known.fd is not None:
                os.close(known.fd)
                self._kept -= 1

    def _merge_db(self, names: list[str]) -> tuple[list[Metric], int]:
        """The application's own prometheus-client metrics, from the files that look sound;
        a file prometheus-client cannot parse is left out, not the whole merge."""
        good = []
        for name in sorted(n for n in names if n.endswith(".db")):
            path = os.path.join(self.path, name)
            if not _DB_NAME.match(name):
                self._bad(path, "format")
                continue
            fd = open_regular(path, self._bad, _DB_MAX_BYTES)
            if fd is None:
                continue
            try:
                head = os.pread(fd, 8, 0)
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            used = int.from_bytes(head[:4], "little") if len(head) == 8 else -1
            if not 8 <= used <= size:
                self._bad(path, "format")
                continue
            good.append(path)
        try:
            return list(MultiProcessCollector.merge(good)), len(good)  # type: ignore[no-untyped-call]
        except Exception:
            sound = []
            for path in good:
                try:
                    MultiProcessCollector.merge([path])  # type: ignore[no-untyped-call]
                    sound.append(path)
                except FileNotFoundError:
                    pass  # a dead process's gauge file, removed since the listing
                except Exception:
                    self._bad(path, "format")
            return list(MultiProcessCollector.merge(sound)), len(sound)  # type: ignore[no-untyped-call]

    def _own(self, up: int, seconds: float, files: int, live: int) -> Iterator[Metric]:
        for metric, value in (
            (m.MULTIPROCESS_UP, up),
            (m.MULTIPROCESS_SCRAPE, seconds),
            (m.MULTIPROCESS_FILES, files),
            (m.MULTIPROCESS_LIVE_WORKERS, live),
        ):
            yield GaugeMetricFamily(metric.name, metric.help, value=value)
        bad = m.MULTIPROCESS_BAD_FILES
        family = GaugeMetricFamily(bad.name, bad.help, labels=list(bad.labels))
        counts = self._bad.counts()
        for reason in m.BAD_FILE_REASONS:
            family.add_metric([reason], counts.get(reason, 0))
        yield family
        dead = m.MULTIPROCESS_DEAD_WORKERS
        yield CounterMetricFamily(dead.name, dead.help, value=self._dead_total)


def _split(names: list[str], reaped: liveness.Reaped) -> tuple[list[str], list[str], list[str]]:
    """Stats files of live workers, of exited ones, and of workers whose liveness cannot be
    told. A file is live only while its pid's lock is held by the process whose token names
    it: a process creates its file after it took the lock, and the listing was taken before
    the locks were tried, so a file listed whose lock is free (or held with another token, by
    a new process given the same pid) belongs to a process that has exited. A pid whose lock
    could not be tried is unknown: its files are never folded."""
    alive: list[str] = []
    dead: list[str] = []
    unknown: list[str] = []
    for name in names:
        match = filenames.STATS_FILE.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid in reaped.unknown:
            unknown.append(name)
        else:
            (alive if reaped.live.get(pid) == match.group(2) else dead).append(name)
    return alive, dead, unknown


def _remove_temporaries(directory: str, names: list[str], reaped: liveness.Reaped) -> None:
    """Stats and exemplar files a worker began and never renamed into place, once it has
    exited."""
    for name in names:
        match = filenames.UNFINISHED_STATS_FILE.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        if pid not in reaped.unknown and reaped.live.get(pid) != match.group(2):
            remove(os.path.join(directory, name))


def _totals(store: archive.Archive, workers: list[Worker]) -> dict[str, PoolStats]:
    """Per pool, the counters and histograms of the archive and of every worker read (only
    those of the PoolStats returned are meaningful: a sum of gauges is not one)."""
    rows = {pool: [slots] for pool, slots in store.totals.items()}
    for worker in workers:
        rows.setdefault(worker.file.pool, []).append(worker.values)
    return {pool: filereader.to_stats(filereader.summed(vs)) for pool, vs in rows.items()}


def _pool_families(view: View) -> Iterator[Metric | Rendered]:
    found = collector.families(per_worker=True)
    rendered = {
        metric.name: Rendered(collector.family(metric, per_worker=True))
        for metric in m.ALL
        if metric.kind in ("gauge", "info")
    }
    now = time.time()
    into = {name: family.rows.append for name, family in rendered.items()}
    for worker in sorted(view.workers, key=lambda w: (w.file.pool, w.file.pid)):
        if worker.active:
            gauges = worker.file.gauges(worker.values)
            rows = collector.worker_rows(gauges, now)
            labelled = worker.file.labelled(rows, gauges.isolation)
            for (metric, _, value), sample in zip(rows, labelled, strict=True):
                into[metric.name]((sample, value))
    exemplars: dict[str, list[Entries]] = {}
    for worker in view.workers:
        if worker.exemplars:
            exemplars.setdefault(worker.file.pool, []).append(worker.exemplars)
    for pool in sorted(view.totals):
        latest = newest(exemplars[pool]) if pool in exemplars else None
        collector.add_total_samples(found, pool, view.totals[pool], latest)
    for pool in sorted(view.routes):
        collector.add_route_samples(found, pool, view.routes[pool])
    for name, family in found.items():
        yield rendered.get(name, family)


def _close_all(known: dict[str, _Known]) -> None:
    """A collector that is garbage-collected closes the descriptors it kept."""
    for one in known.values():
        for fd in (one.fd, one.exemplars.fd if one.exemplars is not None else None):
            if fd is not None:
                os.close(fd)
