"""Multiprocess mode's writer: PoolStats that also keep every value in a file of their own.

Each instrumented pool of each worker has one stats file in the multiprocess directory: its
name says whose it is (filenames.py), its header page what it holds (header.py), its slots the
values (layout.py). The hot path stores the values it changed into the shared mapping, a
plain 8-byte store each: no lock and no system call, which is what makes this mode cost about
what single-process mode costs; the rare updates store every value (storeall.py).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import mmap
import os
import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pool_exporter import fork
from pool_exporter.stats import UNDER_LOCK, UPDATES, Locking, PoolStats, derive, gil_enabled, locked

from . import filenames, files, header, layout, liveness, slots
from .storeall import Values, store_all, views

if TYPE_CHECKING:
    from .routestore import StoredRoutes

log = logging.getLogger("pool_exporter")

_sequence = itertools.count()
# A file that could not be created (a full filesystem) is tried again this often; the
# warning is logged once per process, later failures at debug level.
_RETRY_SECONDS = 2.0
_warned = threading.Event()

_IN_USE = layout.OFFSETS["in_use"]
_IDLE = layout.OFFSETS["idle"]
_WAITING = layout.OFFSETS["waiting"]
_CHECKOUTS = layout.OFFSETS["checkouts"]
_WAIT = layout.OFFSETS["wait"]
_WAIT_SUM = _WAIT + len(PoolStats().wait.counts)
_HOLD = layout.OFFSETS["hold"]
_HOLD_SUM = _HOLD + len(PoolStats().hold.counts)
_OLDEST = layout.OFFSETS["oldest_checkout_started"]
_WAITED = layout.OFFSETS["waited"]


class MultiprocessPoolStats(PoolStats):
    """PoolStats whose values are also stored in this worker's stats file for the pool.

    The attributes stay the truth and each update stores what it changed right after it.
    Each store reads the attribute it stores, so whatever order threads run in, the last
    store of a value writes its latest state (an attribute read and a store into a
    memoryview run in one go under the GIL, as the attribute's own `+=` does). The methods
    of every checkout and checkin repeat PoolStats' arithmetic inline rather than calling it:
    a call and a second bisect cost more than the stores (tests/test_multiprocess_store.py
    holds them equal). waited_out, which only a checkout that found no idle connection runs,
    stores its one count and calls checked_out.
    """

    def __init__(
        self, name: str, info: dict[str, str], directory: str, route_entries: int = 0
    ) -> None:
        self.name = name
        self.info = info
        self.directory = directory
        self.path: str | None = None
        self.active = True
        # The file's shape: this version's fields, and a route region with room for
        # `route_entries` routes when the pool counts checkouts by route (routestore.py,
        # which sets `routes`).
        self.shape = layout.with_routes(route_entries)
        self.routes: StoredRoutes | None = None
        self._seq = next(_sequence)
        self._ints: Values = [0] * self.shape.slots
        self._floats: Values = self._ints
        self._map: mmap.mmap | None = None
        self._attempt = 0
        self._retrying = False
        if not hasattr(self, "_lock"):  # the locked variant has its own
            self._lock: Any = contextlib.nullcontext()
        super().__init__()

    def reset(self) -> None:
        # A new instrumentation, or a forked child: either way a file of this process's own.
        super().reset()
        self._open()

    def _open(self) -> None:
        self._ints = self._floats = [0] * self.shape.slots  # no file yet: stores go nowhere
        self._map, self.path = None, None
        self._attempt += 1  # a retry still scheduled for an earlier file gives up
        self._retrying = False
        self._publish()

    def _publish(self) -> None:
        """Create this pool's file holding every value; on failure keep counting in process,
        and try again later (space may come back)."""
        try:
            # The liveness lock first: a reader folds the file of any process not holding it.
            if not liveness.hold(self.directory, fork.this_process()):
                raise OSError(errno.ENOLCK, "no liveness lock")
            mapped, path = self._create()
        except (OSError, ValueError) as exc:
            self._failed(exc)
            return
        ints, floats = views(mapped, self.shape.slots)
        self._ints, self._floats, self._map, self.path = ints, floats, mapped, path
        # Again: a hot update on another thread may have stored into the old slots meanwhile.
        self._store_all()
        if self.routes is not None:
            self.routes.store(mapped, ints, floats)

    def _create(self) -> tuple[mmap.mmap, str]:
        token = liveness.token()
        assert token is not None
        pid = fork.this_process()
        worker = slots.label(self.directory, pid, token)  # under the liveness lock, for life
        path = os.path.join(self.directory, filenames.stats_file(pid, token, self._seq))
        page = header.encode(self.name, self.info, pid, token, worker, shape=self.shape)

        def fill(mapped: mmap.mmap) -> None:  # every value, before a reader can see the file
            ints, floats = views(mapped, self.shape.slots)
            store_all(self, ints, floats, self.active)
            if self.routes is not None:
                self.routes.store(mapped, ints, floats)

        prefix = filenames.unfinished_prefix(pid, token)  # a reader removes it if we exit
        mapped = files.create_mapped(path, prefix, self.shape.file_bytes, page, fill)
        return mapped, path

    def _failed(self, exc: Exception) -> None:
        if not self._retrying:  # a new failure, not a retry of one already counted
            self.hook_errors["store"] = self.hook_errors.get("store", 0) + 1
            level = logging.DEBUG if _warned.is_set() else logging.WARNING
            _warned.set()
            log.log(
                level,
                "pool-exporter cannot write the stats file of pool %r in %s (%s): it keeps "
                "counting in this process and tries again every %.0f s",
                self.name,
                self.directory,
                exc,
                _RETRY_SECONDS,
            )
        else:
            log.debug("pool-exporter still cannot write the stats file of %r: %s", self.name, exc)
        if self.active:
            retry = threading.Timer(
                _RETRY_SECONDS, self._try_again, (fork.this_process(), self._attempt)
            )
            retry.daemon = True
            retry.start()

    def _try_again(self, pid: int, attempt: int) -> None:
        with self._lock:
            mine = (pid, attempt) == (fork.this_process(), self._attempt)
            if self._map is None and self.active and mine:
                self._retrying = True
                self._publish()
                if self._map is not None:
                    log.info("pool-exporter writes the stats file of pool %r again", self.name)

    def _store_all(self) -> None:
        store_all(self, self._ints, self._floats, self.active)

    def retire(self) -> None:
        self.active = False
        self._store_all()

    # -- the hot path: the attribute update, then a store of each value it changed --

    def enter(self) -> None:
        self.waiting += 1
        self._ints[_WAITING] = self.waiting

    def checked_out(self, wait: float, first: bool, was_idle: bool) -> None:
        q = self._ints
        self.waiting -= 1
        q[_WAITING] = self.waiting
        self.checkouts += 1
        q[_CHECKOUTS] = self.checkouts
        if first:
            self.in_use += 1
            q[_IN_USE] = self.in_use
        if was_idle:
            self.idle -= 1
            q[_IDLE] = self.idle
        h = self.wait
        i = bisect_left(h.bounds, wait)
        h.counts[i] += 1
        q[_WAIT + i] = h.counts[i]
        h.sum += wait
        self._floats[_WAIT_SUM] = h.sum

    def checked_in(self, hold: float | None, now_idle: bool) -> None:
        q = self._ints
        if now_idle:
            self.idle += 1
            q[_IDLE] = self.idle
        if hold is not None:
            self.in_use -= 1
            q[_IN_USE] = self.in_use
            h = self.hold
            i = bisect_left(h.bounds, hold)
            h.counts[i] += 1
            q[_HOLD + i] = h.counts[i]
            h.sum += hold
            self._floats[_HOLD_SUM] = h.sum

    def oldest_changed(self, started: float) -> None:
        # Only when the oldest checkout changes; a held connection ages at the reader.
        self.oldest_checkout_started = started
        self._floats[_OLDEST] = started

    def waited_out(self, wait: float, was_idle: bool) -> None:
        # Every checkout while the pool runs dry: the waited count, then checked_out's stores.
        self.waited += 1
        self._ints[_WAITED] = self.waited
        self.checked_out(wait, True, was_idle)


# The hot path's methods above store what they change; reset opens a new file and retire
# stores everything itself. Every other update stores every value after it (they are rare).
_STORE_THEMSELVES = (
    "enter",
    "checked_out",
    "waited_out",
    "checked_in",
    "oldest_changed",
    "reset",
    "retire",
)


def _then_store(method: Callable[..., Any]) -> Callable[..., Any]:
    def stored(self: MultiprocessPoolStats, *args: Any, **kwargs: Any) -> None:
        method(self, *args, **kwargs)
        self._store_all()

    stored.__name__ = stored.__qualname__ = method.__name__
    stored.__doc__ = method.__doc__
    return stored


derive(MultiprocessPoolStats, _then_store, (u for u in UPDATES if u not in _STORE_THEMSELVES))


class LockedMultiprocessPoolStats(Locking, MultiprocessPoolStats):
    """MultiprocessPoolStats for free-threaded Python, where an attribute `+=` and the store
    after it are not atomic: every update and every snapshot under one lock (stats.Locking)."""


derive(LockedMultiprocessPoolStats, locked, UNDER_LOCK)


def new_stats(
    name: str, info: dict[str, str], directory: str, route_entries: int = 0
) -> MultiprocessPoolStats:
    """A pool's stats in this worker's file (`route_entries`: room for that many routes)."""
    kind = MultiprocessPoolStats if gil_enabled() else LockedMultiprocessPoolStats
    return kind(name, info, directory, route_entries)
