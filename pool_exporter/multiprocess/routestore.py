"""Multiprocess mode's writer of routes: Routes whose counts are also stored in the route
region of the pool's stats file (layout.py), so the sidecar serves them summed over workers.

As in store.py, the attributes stay the truth and each update stores what it changed right
after it, a plain 8-byte store; a route's name is written once, when it is first kept by
name, its length stored after it (a reader takes a name only with its length). The whole
table is written again into each new file (a retry after a full disk, a forked child's).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pool_exporter.routes import ROUTE_UPDATES, RouteCounts, Routes
from pool_exporter.stats import Locking, derive, gil_enabled, locked

from .layout import (
    ENTRY_LENGTH,
    ENTRY_NAME,
    ENTRY_SLOTS,
    ENTRY_VALUES,
    HEADER_BYTES,
    NAME_SLOTS,
    ROUTE_CHECKOUTS,
    ROUTE_SECONDS,
    ROUTE_VALUES,
    ROUTE_WAITED,
)
from .storeall import Values

if TYPE_CHECKING:
    from .store import MultiprocessPoolStats


class StoredRoutes(Routes):
    """Routes of one pool, stored into `stats`' file (whose route region has room for every
    route kept by name: `tracked` entries)."""

    def __init__(
        self,
        route: Callable[[], object],
        max_routes: int,
        hook_failed: Callable[[str, BaseException], None],
        stats: MultiprocessPoolStats,
    ) -> None:
        self.stats = stats
        self.region: int = stats.shape.fields["routes"]["at"]
        self._track_lock = threading.Lock()
        super().__init__(route, max_routes, hook_failed)
        stats.routes = self

    def forget(self) -> None:
        # Memory only: a forked child's stats still map the parent's file until their reset
        # makes the child's own, which writes this (then empty) table.
        super().forget()
        self.untracked = RouteCounts(self.region)

    def began(self, record: Any, waited: bool) -> None:
        # Routes.began's code inline, then the stores: calling Routes.began would cost more
        # than the stores themselves (1,380 bytecodes a cycle against 1,367: bench/bytecodes.py's
        # route variant in multiprocess mode).
        try:
            value = self.route()
            counts = self.counts.get(value)  # type: ignore[call-overload]
        except Exception as exc:
            self.hook_failed("route", exc)
            value, counts = None, None
        if counts is None:
            counts = self._counts_of(value)
        q, at = self.stats._ints, counts.at
        counts.checkouts += 1
        q[at + ROUTE_CHECKOUTS] = counts.checkouts
        if waited:
            counts.waited += 1
            q[at + ROUTE_WAITED] = counts.waited
        self.current[record] = counts

    def ended(self, record: Any, hold: float) -> None:
        counts = self.current.pop(record, None)
        if counts is not None:
            counts.seconds += hold
            self.stats._floats[counts.at + ROUTE_SECONDS] = counts.seconds

    def _track(self, name: str) -> RouteCounts:
        with self._track_lock:  # two threads meeting one new route take one entry
            found = self.counts.get(name)
            if found is not None:
                return found
            n = len(self.counts)
            if n >= self.tracked:
                return self.untracked
            entry = self.region + ROUTE_VALUES + n * ENTRY_SLOTS
            counts = RouteCounts(entry + ENTRY_VALUES)
            self._write_name(entry, name)
            self.counts[name] = counts
            return counts

    def _write_name(self, entry: int, name: str) -> None:
        mapped = self.stats._map
        if mapped is not None:  # else no file yet: the table is written into the next one
            _write_name(mapped, self.stats._ints, entry, name)

    def store(self, mapped: Any, ints: Values, floats: Values) -> None:
        """Write the whole table into a new file: its mapping `mapped`, and its slots."""
        for name, counts in list(self.counts.items()):
            _write_name(mapped, ints, counts.at - ENTRY_VALUES, name)
        for counts in [self.untracked, *self.counts.values()]:
            ints[counts.at + ROUTE_CHECKOUTS] = counts.checkouts
            floats[counts.at + ROUTE_SECONDS] = counts.seconds
            ints[counts.at + ROUTE_WAITED] = counts.waited


def _write_name(mapped: Any, ints: Values, entry: int, name: str) -> None:
    """The name of the route at `entry`, its length stored after it."""
    data = name.encode("utf-8")[: 8 * NAME_SLOTS]
    start = HEADER_BYTES + 8 * (entry + ENTRY_NAME)
    mapped[start : start + len(data)] = data
    ints[entry + ENTRY_LENGTH] = len(data)


class LockedStoredRoutes(Locking, StoredRoutes):
    """StoredRoutes for free-threaded Python: `began`, `ended` and `totals` (and the stores
    of the first two) under one lock, as routes.LockedRoutes."""


derive(LockedStoredRoutes, locked, ROUTE_UPDATES)


def new_stored_routes(
    route: Callable[[], object],
    max_routes: int,
    hook_failed: Callable[[str, BaseException], None],
    stats: MultiprocessPoolStats,
) -> StoredRoutes:
    """A pool's counts by route in its stats file (locked on free-threaded builds)."""
    kind = StoredRoutes if gil_enabled() else LockedStoredRoutes
    return kind(route, max_routes, hook_failed, stats)
