"""Who holds the connections: checkouts, connection-seconds held and waited checkouts by the
route current at checkout (`instrument(engine, route=...)`), with a cap on the routes that
get series of their own, so that a route made from user input cannot flood Prometheus.

Two rooms. `Routes` counts one pool's checkouts in this process: it asks `route()` once per
checkout and keeps up to `TRACKED_PER_SERIES * max_routes` routes by name (the first seen),
the rest summed apart. `RouteCap` decides, at each scrape, which routes are served as series
of their own: at most `max_routes`, the busiest by connection-seconds, the others summed as
`route="(other)"`. Every checkout is counted under exactly one served route, so the routes
always add up to the pool's totals, and no served series ever goes down (see RouteCap).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from .metrics import NO_ROUTE, OTHER_ROUTES
from .stats import Locking, derive, gil_enabled, locked

# What a process keeps by name, per series the exposition may serve: room for routes that
# become busy after others were seen first, within a bound user input cannot raise.
TRACKED_PER_SERIES = 4
# A route's label is cut to this many characters, and to this many bytes of UTF-8 (the room
# for a name in a multiprocess stats file): route() is meant to return a template such as
# "/orders/{id}" or a task name, never the request's own path.
ROUTE_CHARS = 100
ROUTE_BYTES = 128
# The most max_routes may be: what a multiprocess stats file has room for.
MAX_ROUTES = 50
# instrument()'s max_routes.
DEFAULT_MAX_ROUTES = 20

Totals = tuple[int, float, int]
"""(checkouts, connection-seconds held, waited checkouts) of one route."""
ZERO: Totals = (0, 0.0, 0)
RouteTotals = tuple[dict[str, Totals], Totals]
"""Each route's totals by name, and those of the routes not kept by name."""


def add(a: Totals, b: Totals) -> Totals:
    return (a[0] + b[0], a[1] + b[1], a[2] + b[2])


def sum_by_name(tables: Iterable[RouteTotals]) -> RouteTotals:
    """Several workers' (or an archive's) counts by route added up: by route name, and the
    routes not kept by name together."""
    named: dict[str, Totals] = {}
    rest = ZERO
    for their_named, their_rest in tables:
        for name, totals in their_named.items():
            named[name] = add(named.get(name, ZERO), totals)
        rest = add(rest, their_rest)
    return named, rest


class RouteCounts:
    """One route's counts in this process; `at`: where a multiprocess stats file stores them
    (multiprocess/routestore.py), -1 in a single process."""

    __slots__ = ("at", "checkouts", "seconds", "waited")

    def __init__(self, at: int = -1) -> None:
        self.checkouts = 0
        self.seconds = 0.0
        self.waited = 0
        self.at = at

    @property
    def totals(self) -> Totals:
        return (self.checkouts, self.seconds, self.waited)


def label(value: object) -> str | None:
    """The route label of what route() returned; None if it is not a string or None."""
    if value is None or value == "":
        return NO_ROUTE
    if not isinstance(value, str):
        return None
    cut = value[:ROUTE_CHARS]
    if cut.isascii():  # a byte a character: within ROUTE_BYTES
        return cut
    # A lone surrogate could not be written out: replaced, as the exposition would need.
    return cut.encode("utf-8", "replace")[:ROUTE_BYTES].decode("utf-8", "ignore")


class Routes:
    """One pool's counts by route in this process, and the cap on the series it serves.

    The hooks call `began` when a checkout is counted (with whether its caller waited) and
    `ended` with its hold when it ends; both run on the checkout path, so they are a dict
    lookup and a few integer updates, without a lock (the GIL makes each `+=` whole, as in
    stats.PoolStats).
    """

    def __init__(
        self,
        route: Callable[[], object],
        max_routes: int,
        hook_failed: Callable[[str, BaseException], None],
    ) -> None:
        self.route = route
        self.max_routes = max_routes
        self.tracked = TRACKED_PER_SERIES * max_routes
        self.hook_failed = hook_failed
        self.forget()

    def forget(self) -> None:
        """Start from zero (a forked child counts only its own checkouts)."""
        self.counts: dict[str, RouteCounts] = {}
        self.untracked = RouteCounts()  # routes seen after `tracked` others
        self.current: dict[Any, RouteCounts] = {}  # each record out, its route's counts
        self.cap = RouteCap(self.max_routes)

    def began(self, record: Any, waited: bool) -> None:
        """`record` was checked out (`waited`: its caller found no idle connection)."""
        try:
            value = self.route()
            # a route seen before, as returned: the common case, one lookup
            counts = self.counts.get(value)  # type: ignore[call-overload]
        except Exception as exc:
            self.hook_failed("route", exc)
            value, counts = None, None
        if counts is None:
            counts = self._counts_of(value)
        counts.checkouts += 1
        if waited:
            counts.waited += 1
        self.current[record] = counts

    def _counts_of(self, value: object) -> RouteCounts:
        """The counts of what route() returned, made a label (cut, or `(none)`)."""
        name = label(value)
        if name is None:
            kind = type(value).__name__  # not the value: it is the application's data
            self.hook_failed("route", TypeError(f"route() must return a str or None, not {kind}"))
            name = NO_ROUTE
        counts = self.counts.get(name)
        return counts if counts is not None else self._track(name)

    def _track(self, name: str) -> RouteCounts:
        if len(self.counts) >= self.tracked:
            return self.untracked
        return self.counts.setdefault(name, RouteCounts())

    def ended(self, record: Any, hold: float) -> None:
        """`record`'s checkout ended after `hold` seconds."""
        counts = self.current.pop(record, None)
        if counts is not None:
            counts.seconds += hold

    def totals(self) -> tuple[dict[str, Totals], Totals]:
        """Each tracked route's totals, and those of the routes not tracked by name."""
        return {n: c.totals for n, c in list(self.counts.items())}, self.untracked.totals

    def serve(self) -> list[tuple[str, Totals]]:
        """The series to serve now: the capped routes, then (other)."""
        return self.cap.serve(*self.totals())


class LockedRoutes(Locking, Routes):
    """Routes for free-threaded Python, where `+=` is not atomic: `began`, `ended` and
    `totals` under one lock (stats.Locking)."""


# The updates of a process's counts by route, which a locked variant runs under its lock.
ROUTE_UPDATES = ("began", "ended", "totals")
derive(LockedRoutes, locked, ROUTE_UPDATES)


def new_routes(
    route: Callable[[], object],
    max_routes: int,
    hook_failed: Callable[[str, BaseException], None],
) -> Routes:
    """A pool's counts by route in this process (locked on free-threaded builds)."""
    kind = Routes if gil_enabled() else LockedRoutes
    return kind(route, max_routes, hook_failed)


class RouteCap:
    """Which routes have series of their own, decided at each scrape from the routes'
    cumulative totals, remembered from one scrape to the next.

    At most `limit` routes are served, the busiest by connection-seconds; a route not served
    is added to (other). A route that would take the place of a served one must have held
    `PROMOTE` times its connection-seconds, so two routes of about the same load do not swap
    at every scrape. No served value goes down:

    - a route newly served that was in (other) at the last scrape starts its series at zero:
      what it counted until now (its `base`) stays in (other);
    - a route that loses its series adds what it counted since its base to (other).

    `serve` is given cumulative totals by route that never decrease (a process's own counts,
    or the sum over a host's workers, exited ones included) and the totals of the routes not
    counted by name.
    """

    PROMOTE = 1.25

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.served: dict[str, Totals] = {}  # each served route, its base
        self.folded: set[str] = set()  # the routes in (other) at the last scrape
        self._lock = threading.Lock()  # two scrapes at once must not both promote

    def serve(self, values: Mapping[str, Totals], rest: Totals) -> list[tuple[str, Totals]]:
        with self._lock:
            self._choose(values)
            out: list[tuple[str, Totals]] = []
            other = rest
            folded: set[str] = set()
            for name, totals in values.items():
                base = self.served.get(name)
                if base is None:
                    other = add(other, totals)
                    folded.add(name)
                else:
                    out.append((name, _minus(totals, base)))
                    other = add(other, base)
            self.folded = folded
        out.sort()
        out.append((OTHER_ROUTES, other))
        return out

    def _choose(self, values: Mapping[str, Totals]) -> None:
        served = self.served
        for name in [n for n in served if n not in values]:
            del served[name]  # no longer counted by name anywhere: it is in `rest` now
        candidates = sorted(
            (n for n in values if n not in served and n != OTHER_ROUTES),
            key=lambda n: (-values[n][1], -values[n][0], n),
        )
        for name in candidates:
            if len(served) >= self.limit:
                weakest = min(served, key=lambda n: (values[n][1], values[n][0], n))
                if values[name][1] <= self.PROMOTE * values[weakest][1]:
                    break  # the busiest candidate cannot take a place: no later one can
                del served[weakest]
            served[name] = values[name] if name in self.folded else ZERO


def _minus(a: Totals, b: Totals) -> Totals:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2])
