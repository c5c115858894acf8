"""Who holds a connection: the borrow site, the holder's name, and one watcher per process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import weakref
from dataclasses import dataclass
from time import perf_counter
from types import CodeType, FrameType
from typing import Any, Protocol

import sqlalchemy

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


class Watched(Protocol):
    long_checkout_threshold: float | None

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

    def add(self, handle: Watched) -> None:
        with self._cond:
            self._watched.add(handle)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="pool-exporter-long-checkouts", daemon=True
                )
                self._thread.start()
            self._cond.notify()

    def discard(self, handle: Watched) -> None:
        with self._cond:
            self._watched.discard(handle)

    def after_fork(self) -> None:
        """Threads do not survive fork: the child starts its own at its next add()."""
        self._cond = threading.Condition()
        self._thread = None

    def _run(self) -> None:
        while True:
            with self._cond:
                handles = list(self._watched)
            now = perf_counter()
            # Nothing out: sleep one threshold at most, so a checkout made meanwhile is found
            # before it is due and the sleep after that ends exactly at its due time.
            thresholds = [h.long_checkout_threshold or 60.0 for h in handles]
            wake = now + min(thresholds, default=60.0)
            for handle in handles:
                try:
                    due = handle.check_long(now)
                except Exception:  # counted by the handle; the watcher must go on
                    due = None
                if due is not None:
                    wake = min(wake, due)
            with self._cond:
                self._cond.wait(max(0.001, wake - perf_counter()))


watcher = Watcher()
