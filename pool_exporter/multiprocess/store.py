"""Multiprocess mode's writer: PoolStats that also keep every value in a file of their own.

Each instrumented pool of each worker has one file in the multiprocess directory (layout.py),
named by pid, the token of the worker's liveness lock and a sequence number, so a new process
that is given a dead worker's pid never writes into the dead one's file. The hot path stores
the values it changed into the shared mapping, a plain 8-byte store each: no lock and no
system call, which is what makes this mode cost about what single-process mode costs.
"""

from __future__ import annotations

import itertools
import logging
import mmap
import os
from bisect import bisect_left

from pool_exporter.stats import Capacity, PoolStats

from . import layout, liveness

log = logging.getLogger("pool_exporter")

_sequence = itertools.count()

_IN_USE = layout.OFFSETS["in_use"]
_IDLE = layout.OFFSETS["idle"]
_WAITING = layout.OFFSETS["waiting"]
_CHECKOUTS = layout.OFFSETS["checkouts"]
_WAIT = layout.OFFSETS["wait"]
_HOLD = layout.OFFSETS["hold"]


class MultiprocessPoolStats(PoolStats):
    """PoolStats whose values are also stored in this worker's stats file for the pool.

    The attributes stay the truth and each update stores what it changed right after it.
    Each store reads the attribute it stores, so whatever order threads run in, the last
    store of a value writes its latest state (an attribute read and a store into a
    memoryview run in one go under the GIL, as the attribute's own `+=` does).
    """

    def __init__(self, name: str, info: dict[str, str], directory: str) -> None:
        self.name = name
        self.info = info
        self.directory = directory
        self.path: str | None = None
        self.active = True
        self._seq = next(_sequence)
        self._values: layout.Values = [0.0] * layout.SLOTS
        self._map: mmap.mmap | None = None
        super().__init__()

    def reset(self) -> None:
        # A new instrumentation, or a forked child: either way a file of this process's own.
        super().reset()
        self._open()

    def _open(self) -> None:
        self._values, self._map, self.path = [0.0] * layout.SLOTS, None, None
        # The liveness lock first: a reader folds the file of any process not holding it.
        if not liveness.hold(self.directory):
            return
        token = liveness.token()
        assert token is not None
        pid = os.getpid()
        path = os.path.join(self.directory, layout.file_name(pid, token, self._seq))
        tmp = path + ".new"  # not a stats file name: a reader never sees it half-written
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, layout.header(self.name, self.info, pid, token))
                os.ftruncate(fd, layout.FILE_BYTES)
                mapped = mmap.mmap(fd, layout.FILE_BYTES)
            finally:
                os.close(fd)
            values = memoryview(mapped)[layout.HEADER_BYTES :].cast("d")
            layout.write(self, values, self.active)
            os.rename(tmp, path)
        except (OSError, ValueError) as exc:
            log.warning(
                "pool-exporter cannot write the stats file of pool %r in %s (%s): its metrics "
                "are not exported from this process",
                self.name,
                self.directory,
                exc,
            )
            return
        self._values, self._map, self.path = values, mapped, path

    def _store_all(self) -> None:
        layout.write(self, self._values, self.active)

    def retire(self) -> None:
        self.active = False
        self._store_all()

    # -- the hot path: the attribute update, then a store of each value it changed --

    def enter(self) -> None:
        self.waiting += 1
        self._values[_WAITING] = self.waiting

    def checked_out(self, wait: float, first: bool, was_idle: bool) -> None:
        super().checked_out(wait, first, was_idle)
        v = self._values
        v[_WAITING] = self.waiting
        v[_CHECKOUTS] = self.checkouts
        v[_IN_USE] = self.in_use
        v[_IDLE] = self.idle
        h = self.wait
        i = bisect_left(h.bounds, wait)
        v[_WAIT + i] = h.counts[i]
        v[_WAIT + len(h.counts)] = h.sum

    def checked_in(self, hold: float | None, now_idle: bool) -> None:
        super().checked_in(hold, now_idle)
        v = self._values
        v[_IDLE] = self.idle
        if hold is not None:
            v[_IN_USE] = self.in_use
            h = self.hold
            i = bisect_left(h.bounds, hold)
            v[_HOLD + i] = h.counts[i]
            v[_HOLD + len(h.counts)] = h.sum

    # -- everything else is rare: store every value --

    def failed(self, reason: str) -> None:
        super().failed(reason)
        self._store_all()

    def configure(self, capacity: Capacity | None) -> None:
        super().configure(capacity)
        self._store_all()

    def detached(self, hold: float | None) -> None:
        super().detached(hold)
        self._store_all()

    def connected(self, seconds: float) -> None:
        super().connected(seconds)
        self._store_all()

    def closed(self, was_idle: bool) -> None:
        super().closed(was_idle)
        self._store_all()

    def invalidated(self, soft: bool) -> None:
        super().invalidated(soft)
        self._store_all()

    def hook_failed(self, hook: str) -> None:
        super().hook_failed(hook)
        self._store_all()
