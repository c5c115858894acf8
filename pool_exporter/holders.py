"""The checkouts still out: who holds each connection, since when, and one watcher per process.

`CheckoutTracker` is the bookkeeping of one pool's outstanding checkouts (the oldest one, long
checkouts with their borrow sites, connections the garbage collector returned); the checkout
wrapper and the checkin listener in hooks.py write its dicts directly, and call its methods
only off the common path. `Borrow` is what a checkout records about its borrower, and
`Watcher` the one thread per process that finds checkouts held past their threshold.
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
from typing import TYPE_CHECKING, Any, Protocol

import sqlalchemy

if TYPE_CHECKING:
    from .stats import PoolStats

log = logging.getLogger("pool_exporter")

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

# What popping a record from `out` gives when it was not there.
NOT_OUT = object()


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

    __slots__ = ("code", "ident", "lasti", "long", "task")

    def __init__(self) -> None:
        self.long = False
        self.ident = threading.get_ident()
        # sys._getframe walks frame objects without formatting them, unlike traceback's
        # extract_stack, which reads source lines for the whole stack.
        frame: FrameType | None = sys._getframe(2)
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
    """The checkouts of one pool still out: the oldest, the long ones, the ones the garbage
    collector returned, and `checkouts()`, the list of them.

    A checkout's start is its marker in `record.record_info[key]`, a perf_counter() float the
    checkout wrapper sets; `key` is replaced after a fork, so that markers the parent left on
    its connections mean nothing in the child. `out` maps each record out now to its fairy's
    weakref, in checkout order, so its first item is the oldest; the weakref tells a checkin
    the garbage collector made (the fairy is gone) from a close. `borrows` maps a record to
    its `Borrow`, with a threshold only. The hooks write both dicts themselves, so that the
    common checkout and checkin make no call into this class; the rest goes through the
    methods here.
    """

    def __init__(
        self,
        name: str,
        stats: PoolStats,
        threshold: float | None,
        hook_failed: Callable[[str, BaseException], None],
    ) -> None:
        self.name = name
        self.stats = stats
        self.threshold = threshold
        self._hook_failed = hook_failed
        self.key: object = object()
        self.out: dict[Any, Any] = {}
        self.borrows: dict[Any, Borrow] = {}
        self.oldest: Any = None  # the record whose start is published
        self._gc_logged: set[object] = set()
        self._long_lock = threading.RLock()  # reentrant: a GC checkin can run inside it
        self.active = True

    def watch(self) -> None:
        """Have this process's watcher thread look for long checkouts, with a threshold."""
        if self.threshold is not None:
            watcher.add(self)

    def stop(self) -> None:
        """No more long checkouts are looked for (the pool is no longer instrumented)."""
        self.active = False
        watcher.discard(self)

    def forget(self) -> None:
        """Start again with nothing out, a new key and a new lock (a forked child, which must
        not count its parent's checkouts). The dicts are cleared, not replaced: the hooks hold
        them."""
        self.key = object()
        self.out.clear()
        self.borrows.clear()
        self.oldest = None
        self._gc_logged = set()
        # A thread of the parent may have held it at the fork; that thread is gone.
        self._long_lock = threading.RLock()

    def ended(self, record: Any, hold: float | None) -> None:
        """A checkout ended: its connection came back or was detached. The checkin listener
        inlines this for the last one out coming back normally, its most common case."""
        ref = self.out.pop(record, NOT_OUT)
        if ref is NOT_OUT:
            return
        self.released(record, ref)
        borrow = self.borrows.pop(record, None)
        if borrow is not None:
            self.long_returned(borrow, hold)

    def released(self, record: Any, ref: Any) -> None:
        """`record` left `out`, other than the last one out closing normally."""
        if ref is not None and ref() is None:  # the fairy is gone: the GC is returning it
            self._collected(record)
        if record is self.oldest or not self.out:
            self.publish_oldest()

    def long_returned(self, borrow: Borrow, hold: float | None) -> None:
        """A checkout with a borrow site came back: count it if the watcher has not yet."""
        threshold = self.threshold
        if threshold is not None and hold is not None and hold >= threshold:
            self._report_long(borrow, hold)  # came back before the watcher woke
        if borrow.long:
            log.info(
                "pool %r: the long checkout borrowed at %s came back after %.1f s",
                self.name,
                borrow.site or "an unknown site",
                hold if hold is not None else float("nan"),
            )

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
            start = None if record is None else record.record_info.get(self.key)
            self.oldest = record
            # Unix time, for a sidecar in another process; converted from the hooks'
            # perf_counter() now rather than with an offset kept since start-up, so a step of
            # the wall clock cannot shift every later age.
            self.stats.oldest_changed(
                time.time() - (perf_counter() - start) if start.__class__ is float else 0.0
            )
            try:
                if next(iter(out), None) is record:
                    return
            except RuntimeError:
                continue

    def _collected(self, record: Any) -> None:
        self.stats.collected()
        borrow = self.borrows.get(record)
        site = borrow.site if borrow is not None else None
        first = site not in self._gc_logged
        self._gc_logged.add(site)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "pool %r: the garbage collector returned a connection the application never "
            "closed (counted in sqlalchemy_pool_gc_returned_connections_total), borrowed at %s",
            self.name,
            site or "an unknown site (set long_checkout_threshold to record it)",
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
        threshold = self.threshold
        if threshold is None or not self.active:
            return None
        try:
            for record, start in self._started():
                due = start + threshold
                if due > now:
                    return due
                borrow = self.borrows.get(record)
                if borrow is not None and not borrow.long:
                    self._report_long(borrow, now - start)
        except Exception as exc:
            self._hook_failed("long_checkout", exc)
        return None

    def _started(self) -> Iterator[tuple[Any, float]]:
        """Each record out now, oldest first, with the perf_counter() of its checkout."""
        key = self.key
        for record in list(self.out):
            start = record.record_info.get(key)
            if start.__class__ is float:
                yield record, start

    def checkouts(self) -> list[Checkout]:
        """The connections out now, oldest first (`PoolInstrumentation.checkouts()`)."""
        now = perf_counter()
        found = []
        for record, start in self._started():
            borrow = self.borrows.get(record)
            found.append(
                Checkout(
                    age=now - start,
                    site=borrow.site if borrow else None,
                    thread=borrow.thread if borrow else None,
                    task=borrow.task if borrow else None,
                    long=borrow.long if borrow else False,
                )
            )
        found.sort(key=lambda c: -c.age)
        return found


class Watched(Protocol):
    threshold: float | None

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
            thresholds = [t.threshold or 60.0 for t in trackers]
            wake = now + min(thresholds, default=60.0)
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
