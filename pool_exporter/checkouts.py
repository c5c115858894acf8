"""One pool's checkouts: the marker that says whether each connection is in use or idle, the
checkouts still out (who holds each, since when), and the one watcher thread per process.

`CheckoutTracker` turns what the hooks (hooks.py) report into marker changes and tells the
stats what changed state; it keeps the checkouts out, the oldest and the ones the garbage
collector returned, and hands a checkout that waited to the pool's exemplars (exemplars.py).
With a threshold, `LongCheckoutTracker` also keeps each checkout's `Borrow` (what it records
about its borrower) and reports the long ones; `Watcher` is the thread that finds those held
past their threshold.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from time import perf_counter
from types import CodeType, FrameType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, TypeAlias

import sqlalchemy

from .exemplars import TRACING, Exemplars, Trace

if TYPE_CHECKING:
    from .stats import PoolStats

log = logging.getLogger("pool_exporter")

# -- The marker -------------------------------------------------------------------------------
# Each connection of an instrumented pool carries one marker in its
# `ConnectionPoolEntry.record_info` (a dict SQLAlchemy keeps with the pool's entry, across
# reconnects), under the tracker's `key`. Only CheckoutTracker reads or writes it.
#
# - absent: not counted, neither in use nor idle. A new connection before its first checkout,
#   one closed or detached, one out when `instrument()` was called, and every connection a
#   forked child inherited (the child's tracker has a new key, so the parent's markers are
#   absent to it).
# - IDLE: idle in the pool counted now.
# - WAITED: idle in the pool counted now, and being handed to a caller that found the pool's
#   queue empty and waited until this one came back.
# - OPENED: opened (or reopened) for a caller that found no idle connection; not yet out, and
#   not idle either.
# - a float: out since that perf_counter().
#
# In use and idle are counts of markers in those states (IDLE and WAITED idle, a float in
# use): the stats move only when a marker changes state, never once per event, because the
# events do not pair up (docs/internals.md shows each trap). WAITED and OPENED tell the checkout
# that takes the connection that its caller found no idle one (the waited checkouts); they are
# set by the pool's code paths that only such a caller runs (follow.py wraps them), so a
# checkout that finds an idle connection tests nothing more than before.
IDLE: Final = "idle"
WAITED: Final = "waited"
OPENED: Final = "opened"
Marker: TypeAlias = float | Literal["idle", "waited", "opened"]
"""A marker present in `record_info`: IDLE, WAITED, OPENED, or the perf_counter() of the
checkout."""

# What CheckoutTracker.checked_out returns for a checkout whose caller found no idle connection
# (a true value, as True is for the others; False: the connection was out already).
WAITED_OUT: Final = 2

# Frames in these directories and files are the machinery between the application and the
# pool: contextlib's because `with engine.begin()` checks out inside its __enter__, and the
# code SQLAlchemy generates at import, which the ORM's Session checks out through (named
# "<sqlalchemy generated _go() wrapper ...>" by 2.1, "<string>" by 2.0, like any exec'd code).
_SKIP = (
    os.path.dirname(sqlalchemy.__file__) + os.sep,
    os.path.dirname(__file__) + os.sep,
    contextlib.__file__ or "contextlib",
    "<sqlalchemy",
    "<string>",
)
_skipped: dict[str, bool] = {}  # filename -> whether it is in _SKIP


@dataclass(frozen=True)
class BorrowSite:
    """Where the application asked for a connection: the first frame outside SQLAlchemy and
    pool-exporter. Only the code location, never local variables or SQL parameters."""

    filename: str
    lineno: int
    function: str

    def __str__(self) -> str:
        return f"{self.filename}:{self.lineno} in {self.function}"


@dataclass(frozen=True)
class Checkout:
    """One connection out of the pool now, as `PoolInstrumentation.checkouts()` lists it."""

    age: float
    """Seconds since the checkout."""
    site: BorrowSite | None
    """Where it was borrowed; None unless `long_checkout_threshold` is set."""
    thread: str | None
    """The borrowing thread's name (with the threshold set)."""
    task: str | None
    """The borrowing asyncio task's name, for async engines (with the threshold set)."""
    long: bool
    """Whether it was counted as a long checkout."""


class Borrow:
    """What is kept per checkout when a threshold is set, captured on the checkout path.

    Only what is cheap to take is taken there: the code object and instruction offset of the
    borrowing frame (its line number is worked out when reported: `f_lineno` scans the line
    table and costs tens of microseconds in a long function), and the thread's id (its name
    is looked up when reported: `current_thread()` costs more than the rest together).
    """

    __slots__ = ("code", "ident", "lasti", "long", "task", "trace")

    def __init__(self) -> None:
        self.long = False
        # The span current at the checkout, while exemplars are on (exemplars.py): a hold that
        # turns out long is that trace's, wherever the connection comes back.
        self.trace: Trace | None = None
        self.ident = threading.get_ident()
        # sys._getframe walks frame objects without formatting them, unlike traceback's
        # extract_stack, which reads source lines for the whole stack. It starts past this
        # frame, LongCheckoutTracker.checked_out's and the checkout wrapper's.
        frame: FrameType | None = sys._getframe(3)
        skipped = _skipped
        while frame is not None:
            filename = frame.f_code.co_filename
            skip = skipped.get(filename)
            if skip is None:
                skip = skipped[filename] = filename.startswith(_SKIP)
            if not skip:
                break
            frame = frame.f_back
        self.task: str | None = None
        if asyncio._get_running_loop() is not None:
            task = asyncio.current_task()
            if task is not None:
                self.task = task.get_name()
                if frame is None:  # an async engine checks out in a greenlet without f_back
                    frame = _innermost_awaiting(task)
        self.code: CodeType | None = None if frame is None else frame.f_code
        self.lasti = -1 if frame is None else frame.f_lasti

    @property
    def site(self) -> BorrowSite | None:
        code = self.code
        if code is None:
            return None
        line = next((n for a, b, n in code.co_lines() if a <= self.lasti < b), None)
        return BorrowSite(code.co_filename, line or code.co_firstlineno, code.co_name)

    @property
    def thread(self) -> str:
        found = next((t for t in threading.enumerate() if t.ident == self.ident), None)
        return found.name if found is not None else f"thread {self.ident} (exited)"


def _innermost_awaiting(task: asyncio.Task[Any]) -> FrameType | None:
    """The innermost application coroutine frame in the task's await chain."""
    found: FrameType | None = None
    coro: Any = task.get_coro()
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            if frame.f_code.co_filename.startswith(_SKIP):
                if found is not None:
                    break
            else:
                found = frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return found


class CheckoutTracker:
    """One pool's checkouts: the marker on each of its connections, and the checkouts still
    out (the oldest, the ones the garbage collector returned, and `checkouts()`, the list of
    them). LongCheckoutTracker adds borrow sites and the threshold.

    The hooks report what SQLAlchemy did, one method per event: `checked_out`, `checked_in`,
    `detached`, `closed`. Each moves the connection's marker and tells the stats what changed
    state (a connection in use or idle, or no longer), with the wait or the hold. A checkout
    that waited (found no idle connection) longer than `TRACING.min_wait`, +inf while
    exemplars are off, goes to `exemplars` too, from the waited path only;
    LongCheckoutTracker gives it the holds past the threshold.

    `out` maps each record out now to its fairy's weakref, in checkout order, so its first item
    is the oldest; the weakref tells a checkin the garbage collector made (the fairy is gone)
    from a close. A record is in `out` while its marker is a start time. `key` is the marker's
    key, replaced after a fork.

    `checked_out` and `checked_in` run on every checkout and checkin: the hooks take them as
    bound methods once, and each keeps its common case straight-line (one checkout out at a
    time, closed by its borrower); `_ended` does the rest.
    """

    def __init__(
        self,
        name: str,
        stats: PoolStats,
        hook_failed: Callable[[str, BaseException], None],
        exemplars: Exemplars,
    ) -> None:
        self.name = name
        self.stats = stats
        self._hook_failed = hook_failed
        self.exemplars = exemplars
        self.key: object = object()
        self.out: dict[Any, Any] = {}
        self.oldest: Any = None  # the record whose start is published; None while none is out
        self._gc_logged: set[object] = set()

    # -- what the hooks report: the two on every checkout and checkin first ------------------

    def checked_out(self, record: Any, waiting_since: float) -> int:
        """A caller that began waiting at perf_counter() `waiting_since` got `record`; whether
        that made it out: True, or WAITED_OUT when the caller found no idle connection (False:
        the pool handed out a connection already out)."""
        now = perf_counter()
        prev = record.record_info.get(self.key)
        if prev is IDLE or prev is None:
            record.record_info[self.key] = now
            self.out[record] = record.fairy_ref
            # None: nothing else was out, so this one is the oldest (only its borrower can
            # return it). A checkin racing this on another thread publishes again after it.
            if self.oldest is None:
                self.oldest = record
                self.stats.oldest_changed(time.time())
            self.stats.checked_out(now - waiting_since, True, prev is IDLE)
            return True
        if prev is WAITED or prev is OPENED:
            return self._waited_out(record, prev, now, waiting_since)
        # StaticPool shares one connection between checkouts, SingletonThreadPool within a thread
        self.stats.checked_out(now - waiting_since, False, False)
        return False

    def _waited_out(self, record: Any, prev: Marker, now: float, waiting_since: float) -> int:
        """checked_out() of a connection whose caller found no idle one (the marker says so):
        the same as a checkout that found one, counted as waited."""
        record.record_info[self.key] = now
        self.out[record] = record.fairy_ref
        if self.oldest is None:
            self.oldest = record
            self.stats.oldest_changed(time.time())
        wait = now - waiting_since
        self.stats.waited_out(wait, prev is WAITED)
        # Only here, on the waited path: a checkout that found an idle connection reads no
        # span. +inf unless exemplars are on (exemplars.py).
        if wait > TRACING.min_wait:
            self.exemplars.waited(wait)
        return WAITED_OUT

    def opened(self, record: Any) -> None:
        """The pool opened `record` for a caller that found no idle connection (its first
        connection; QueuePool's overflow, every NullPool checkout)."""
        info = record.record_info
        if self.key not in info:
            info[self.key] = OPENED

    def handed_over(self, record: Any) -> None:
        """`record` came back to a pool whose queue a caller was waiting on, and is that
        caller's: it is idle until the caller's checkout, unless it came back without its
        connection (then it is reopened for the caller)."""
        info = record.record_info
        prev = info.get(self.key)
        if prev is IDLE:
            info[self.key] = WAITED
        elif prev is None:
            info[self.key] = OPENED

    def checked_in(self, record: Any, to_idle: bool) -> float | None:
        """`record` came back to the pool; `to_idle`: with its connection, to the pool counted
        now, where it is idle from here on (not to one that `dispose()` replaced). Returns how
        long it was out, if it was."""
        prev = record.record_info.pop(self.key, None)
        if prev.__class__ is not float:  # no checkout counted: a failed reconnect's checkin, or
            # a connection out since before instrument() or the fork
            if to_idle:
                record.record_info[self.key] = IDLE
            # A failed reconnect's checkin finds the connection idle already.
            self.stats.checked_in(None, to_idle and prev is not IDLE and prev is not WAITED)
            return None
        hold = perf_counter() - prev
        out = self.out
        ref = out.pop(record, None)
        if out or ref is None or ref() is None:
            self._ended(record, ref)
        else:  # the common case: the only one out came back, closed by its borrower
            self.oldest = None
            self.stats.oldest_changed(0.0)
            if out:  # another thread checked out meanwhile
                self.publish_oldest()
        if to_idle:
            record.record_info[self.key] = IDLE
        self.stats.checked_in(hold, to_idle)
        return hold

    def detached(self, record: Any) -> float | None:
        """`record`'s connection left the pool for good (`Connection.detach()`, or an async
        connection the garbage collector found): SQLAlchemy returns the record without it and
        fires no checkin, so the checkout ends here, and it is idle nowhere. Returns how long
        it was out, if it was."""
        prev = record.record_info.pop(self.key, None)
        hold = None
        if prev.__class__ is float:
            hold = perf_counter() - prev
            self._ended(record, self.out.pop(record, None))
        self.stats.detached(hold)
        return hold

    def closed(self, record: Any, counted: bool, reason: str) -> None:
        """`record`'s connection is being closed for `reason`; `counted`: it belongs to the
        pool counted now. An idle one leaves the pool; one still out keeps its marker until its
        checkin or detach ends the checkout (an invalidated connection is closed before its
        checkin)."""
        info = record.record_info
        prev = info.get(self.key)
        if prev is IDLE:
            del info[self.key]
        elif prev is WAITED:  # recycled on its way to the caller that waited for it
            info[self.key] = OPENED
        # idle restarted at 0 when the pool was replaced: its connections no longer count
        self.stats.closed((prev is IDLE or prev is WAITED) and counted, reason)

    def marker(self, record: Any) -> Marker | None:
        """`record`'s marker (None: absent)."""
        found: Marker | None = record.record_info.get(self.key)
        return found

    def started(self, record: Any) -> float | None:
        """The perf_counter() of `record`'s checkout, while it is out."""
        start = self.marker(record)
        return start if isinstance(start, float) else None

    # -- the rest of a checkout's end --------------------------------------------------------

    def _ended(self, record: Any, ref: Any) -> None:
        """`record`'s checkout ended, other than the only one out coming back closed by its
        borrower; `ref` is what `out` held for it."""
        if ref is not None and ref() is None:  # the fairy is gone: the GC is returning it
            self._collected(record)
        if record is self.oldest or not self.out:
            self.publish_oldest()

    def publish_oldest(self) -> None:
        """Write the start of the first checkout out (0 when none is) to the stats."""
        # Checkins and checkouts on other threads can interleave with this; write, then check
        # that the first item is still the one written, so the field never stays stale.
        out = self.out
        for _ in range(8):
            try:
                record = next(iter(out), None)
            except RuntimeError:  # the dict changed size between iter() and next()
                continue
            start = None if record is None else self.started(record)
            self.oldest = record
            # Unix time, for a sidecar in another process; converted from the hooks'
            # perf_counter() now rather than with an offset kept since start-up, so a step of
            # the wall clock cannot shift every later age.
            self.stats.oldest_changed(
                time.time() - (perf_counter() - start) if start is not None else 0.0
            )
            try:
                if next(iter(out), None) is record:
                    return
            except RuntimeError:
                continue

    def _collected(self, record: Any) -> None:
        self.stats.collected()
        site = self._site(record)
        first = site not in self._gc_logged
        self._gc_logged.add(site)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "pool %r: the garbage collector returned a connection the application never "
            "closed (counted in sqlalchemy_pool_gc_returned_connections_total), borrowed at %s",
            self.name,
            site or "an unknown site (set long_checkout_threshold to record it)",
        )

    def _site(self, record: Any) -> BorrowSite | None:
        """Where `record`'s checkout was borrowed, if known."""
        return None

    # -- the list of those out ---------------------------------------------------------------

    def checkouts(self) -> list[Checkout]:
        """The connections out now, oldest first (`PoolInstrumentation.checkouts()`)."""
        now = perf_counter()
        found = [self._checkout(record, now - start) for record, start in self._started()]
        found.sort(key=lambda c: -c.age)
        return found

    def _checkout(self, record: Any, age: float) -> Checkout:
        return Checkout(age=age, site=None, thread=None, task=None, long=False)

    def _started(self) -> Iterator[tuple[Any, float]]:
        """Each record out now, oldest first, with the perf_counter() of its checkout."""
        for record in list(self.out):
            start = self.started(record)
            if start is not None:
                yield record, start

    # -- this process: a fork, uninstrument() ------------------------------------------------

    def watch(self) -> None:
        """Have this process's watcher thread look for long checkouts (with a threshold)."""

    def stop(self) -> None:
        """The pool is no longer instrumented: no more long checkouts are looked for."""

    def forget(self) -> None:
        """Start again with nothing out and a new key (a forked child, which must not count
        its parent's checkouts: their markers are under the old key)."""
        self.key = object()
        self.out.clear()
        self.oldest = None
        self._gc_logged = set()


class LongCheckoutTracker(CheckoutTracker):
    """A CheckoutTracker that also records where each checkout was borrowed (`Borrow`), and
    counts and logs the checkouts held past `threshold`: found by the watcher thread while
    still out, or at their checkin if it comes first.

    A subclass rather than a test of the threshold in CheckoutTracker: without a threshold,
    the checkout and the checkin do not pay for it.
    """

    def __init__(
        self,
        name: str,
        stats: PoolStats,
        threshold: float,
        hook_failed: Callable[[str, BaseException], None],
        exemplars: Exemplars,
    ) -> None:
        super().__init__(name, stats, hook_failed, exemplars)
        self.threshold = threshold
        self.borrows: dict[Any, Borrow] = {}  # each record out, its Borrow
        self._long_lock = threading.RLock()  # reentrant: a GC checkin can run inside it
        self.active = True

    def checked_out(self, record: Any, waiting_since: float) -> int:
        out = super().checked_out(record, waiting_since)
        if out:
            borrow = self.borrows[record] = Borrow()
            if TRACING.recorder is not None:
                borrow.trace = self.exemplars.capture()
        return out

    def checked_in(self, record: Any, to_idle: bool) -> float | None:
        hold = super().checked_in(record, to_idle)  # a GC checkin reads the borrow site
        self._returned(record, hold)
        return hold

    def detached(self, record: Any) -> float | None:
        hold = super().detached(record)
        self._returned(record, hold)
        return hold

    def _returned(self, record: Any, hold: float | None) -> None:
        """`record`'s checkout ended after `hold` seconds: count it long if the watcher has
        not yet, and log a long one's return."""
        borrow = self.borrows.pop(record, None)
        if borrow is None:
            return
        if hold is not None and hold >= self.threshold:
            self._report_long(borrow, hold)  # came back before the watcher woke
            if borrow.trace is not None:
                self.exemplars.held(hold, borrow.trace)
        if borrow.long:
            log.info(
                "pool %r: the long checkout borrowed at %s came back after %.1f s",
                self.name,
                borrow.site or "an unknown site",
                hold if hold is not None else float("nan"),
            )

    def _site(self, record: Any) -> BorrowSite | None:
        borrow = self.borrows.get(record)
        return borrow.site if borrow is not None else None

    def _checkout(self, record: Any, age: float) -> Checkout:
        borrow = self.borrows.get(record)
        if borrow is None:  # out before the checkout wrapper took its site
            return super()._checkout(record, age)
        return Checkout(
            age=age, site=borrow.site, thread=borrow.thread, task=borrow.task, long=borrow.long
        )

    def _report_long(self, borrow: Borrow, age: float) -> None:
        with self._long_lock:
            if borrow.long:
                return
            borrow.long = True
        self.stats.held_long()
        log.warning(
            "pool %r: a connection has been checked out for %.1f s (long_checkout_threshold "
            "%.1f s), borrowed at %s by thread %r%s",
            self.name,
            age,
            self.threshold,
            borrow.site or "an unknown site",
            borrow.thread,
            f" task {borrow.task!r}" if borrow.task else "",
        )

    def check_long(self, now: float) -> float | None:
        """Report the checkouts held past the threshold (the watcher thread calls this);
        returns the perf_counter() at which the next one is due, if any is out."""
        if not self.active:
            return None
        try:
            for record, start in self._started():
                due = start + self.threshold
                if due > now:
                    return due
                borrow = self.borrows.get(record)
                if borrow is not None and not borrow.long:
                    self._report_long(borrow, now - start)
        except Exception as exc:
            self._hook_failed("long_checkout", exc)
        return None

    def watch(self) -> None:
        watcher.add(self)

    def stop(self) -> None:
        self.active = False
        watcher.discard(self)

    def forget(self) -> None:
        super().forget()
        self.borrows.clear()
        # A thread of the parent may have held it at the fork; that thread is gone.
        self._long_lock = threading.RLock()


def new_tracker(
    name: str,
    stats: PoolStats,
    threshold: float | None,
    hook_failed: Callable[[str, BaseException], None],
    exemplars: Exemplars,
) -> CheckoutTracker:
    """The tracker of one pool: with a long-checkout threshold, one that watches for them."""
    if threshold is None:
        return CheckoutTracker(name, stats, hook_failed, exemplars)
    return LongCheckoutTracker(name, stats, threshold, hook_failed, exemplars)


class Watched(Protocol):
    threshold: float

    def check_long(self, now: float) -> float | None:
        """Report checkouts past the threshold; the perf_counter() of the next one due."""
        ...


class Watcher:
    """One daemon thread per process that wakes when the oldest unreported checkout of any
    watched pool crosses its threshold, instead of a timer per connection."""

    def __init__(self) -> None:
        self._watched: weakref.WeakSet[Any] = weakref.WeakSet()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, tracker: Watched) -> None:
        with self._cond:
            self._watched.add(tracker)
            self._start()
            self._cond.notify()

    def _start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._run, name="pool-exporter-long-checkouts", daemon=True
            )
            self._thread.start()

    def discard(self, tracker: Watched) -> None:
        with self._cond:
            self._watched.discard(tracker)

    def after_fork(self) -> None:
        """In a forked child, once its trackers are reset: threads do not survive fork, so
        the child starts a thread of its own for the trackers it watches."""
        self._cond = threading.Condition()  # a thread of the parent may have held it
        self._thread = None
        with self._cond:
            if self._watched:
                self._start()

    def _run(self) -> None:
        while True:
            with self._cond:
                trackers = list(self._watched)
            now = perf_counter()
            # Nothing out: sleep one threshold at most, so a checkout made meanwhile is found
            # before it is due and the sleep after that ends exactly at its due time.
            wake = now + min((t.threshold for t in trackers), default=60.0)
            for tracker in trackers:
                try:
                    due = tracker.check_long(now)
                except Exception:  # counted by the tracker; the watcher must go on
                    due = None
                if due is not None:
                    wake = min(wake, due)
            with self._cond:
                self._cond.wait(max(0.001, wake - perf_counter()))


watcher = Watcher()
