"""The checkout tracker on real pools: the marker on each connection, and the oldest checkout
out through checkouts and checkins on several threads, the garbage collector and detach."""

from __future__ import annotations

import asyncio
import gc
import queue
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import create_async_engine

import pool_exporter
from pool_exporter.checkouts import IDLE
from pool_exporter.instrument import PoolInstrumentation

# Checkouts a test tells apart by their start are made this far apart: much more than the
# error of converting a perf_counter() start into Unix time (two clock reads, microseconds).
GAP = 0.02
SLACK = 0.005


def record_of(conn: sa.Connection) -> Any:
    """The pool's entry (ConnectionPoolEntry) of a checked-out connection."""
    return conn.connection._connection_record


def hold_count(handle: PoolInstrumentation) -> int:
    return sum(handle.stats.hold.counts)


Instrumented = Callable[..., tuple[sa.Engine, PoolInstrumentation]]


@pytest.fixture
def instrumented(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> Instrumented:
    """make(name, **pool options): a QueuePool engine on SQLite, instrumented as `name`."""

    def make(name: str, **options: int) -> tuple[sa.Engine, PoolInstrumentation]:
        engine = sa.create_engine(sqlite_url, **options)
        engines.append(engine)
        return engine, pool_exporter.instrument(engine, name=name, registry=registry)

    return make


def timed_connect(engine: sa.Engine) -> tuple[sa.Connection, tuple[float, float]]:
    """A checkout, and the Unix time just before and just after it."""
    before = time.time()
    conn = engine.connect()
    return conn, (before, time.time())


class Borrower:
    """A thread that checks a connection out, or back in, when told: the test decides the
    order of checkouts and checkins across threads. `window` is the Unix time just before and
    just after its last checkout, `record` the entry it got."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.window = (0.0, 0.0)
        self.record: Any = None
        self._orders: queue.Queue[str] = queue.Queue()
        self._done: queue.Queue[BaseException | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        conn = None
        while (order := self._orders.get()) != "stop":
            try:
                if order == "out":
                    conn, self.window = timed_connect(self.engine)
                    self.record = record_of(conn)
                else:
                    assert conn is not None
                    conn.close()
            except BaseException as exc:
                self._done.put(exc)
            else:
                self._done.put(None)
        if conn is not None:
            conn.close()

    def do(self, order: str) -> None:
        self._orders.put(order)
        error = self._done.get(timeout=30)
        if error is not None:
            raise error

    def stop(self) -> None:
        self._orders.put("stop")
        self._thread.join(timeout=30)


def assert_oldest_is(handle: PoolInstrumentation, window: tuple[float, float], record: Any) -> None:
    """The published oldest checkout is the one made in `window`, on `record`."""
    started = handle.stats.oldest_checkout_started
    before, after = window
    assert before - SLACK <= started <= after + SLACK, (window, started)
    assert handle.tracker.oldest is record


def assert_none_out(handle: PoolInstrumentation) -> None:
    assert handle.stats.oldest_checkout_started == 0
    assert handle.tracker.oldest is None
    assert handle.checkouts() == []
    assert handle.stats.in_use == 0


def test_the_marker_is_a_start_while_out_idle_in_the_pool_and_absent_once_closed(
    instrumented: Instrumented,
) -> None:
    engine, handle = instrumented("marker", pool_size=2)
    tracker, stats = handle.tracker, handle.stats

    conn = engine.connect()
    record = record_of(conn)
    start = tracker.marker(record)
    assert isinstance(start, float) and tracker.started(record) == start
    assert (stats.in_use, stats.idle) == (1, 0)
    conn.close()
    assert tracker.marker(record) == IDLE and tracker.started(record) is None
    assert (stats.in_use, stats.idle) == (0, 1)

    conn = engine.connect()  # the idle one again: no longer idle
    assert record_of(conn) is record and isinstance(tracker.marker(record), float)
    assert (stats.in_use, stats.idle) == (1, 0)
    conn.invalidate()  # closed while out, then returned without its connection: idle nowhere
    assert tracker.marker(record) is None
    assert (stats.in_use, stats.idle) == (0, 0)
    conn.close()

    with engine.connect() as conn:
        record = record_of(conn)
    assert tracker.marker(record) == IDLE and stats.idle == 1
    engine.dispose()  # closes the idle connection
    assert tracker.marker(record) is None
    assert (stats.in_use, stats.idle) == (0, 0)
    assert stats.checkouts == 3 and hold_count(handle) == 3


def test_the_oldest_checkout_follows_checkouts_and_checkins_on_several_threads(
    instrumented: Instrumented,
) -> None:
    engine, handle = instrumented("order", pool_size=4)
    borrowers = [Borrower(engine) for _ in range(4)]
    out: list[Borrower] = []  # in checkout order: the first is the oldest
    # A younger one back first, then the oldest with others out, one out again while others
    # are, and the last two back in the order they went out.
    steps = [(0, "out"), (1, "out"), (2, "out"), (1, "in"), (0, "in"), (0, "out"), (2, "in"),
             (3, "out"), (0, "in"), (3, "in")]  # fmt: skip
    try:
        for i, order in steps:
            borrowers[i].do(order)
            if order == "out":
                out.append(borrowers[i])
                time.sleep(GAP)  # ages apart, so each checkout's start names it
            else:
                out.remove(borrowers[i])
            if out:
                assert_oldest_is(handle, out[0].window, out[0].record)
                assert len(handle.checkouts()) == len(out) == handle.stats.in_use
            else:
                assert_none_out(handle)
    finally:
        for borrower in borrowers:
            borrower.stop()
    assert handle.stats.checkouts == 5 and hold_count(handle) == 5


def test_a_checkout_held_while_other_threads_churn_stays_the_published_oldest(
    instrumented: Instrumented,
) -> None:
    engine, handle = instrumented("churn", pool_size=3, max_overflow=3)
    held = engine.connect()
    published = handle.stats.oldest_checkout_started
    assert published > 0
    seen: set[float] = set()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            seen.add(handle.stats.oldest_checkout_started)
            time.sleep(0)

    def user() -> None:
        for _ in range(300):
            with engine.connect():
                time.sleep(0)  # let the other threads interleave with checkout and checkin

    sampler = threading.Thread(target=sample)
    users = [threading.Thread(target=user) for _ in range(5)]
    sampler.start()
    for t in users:
        t.start()
    for t in users:
        t.join()
    stop.set()
    sampler.join()
    assert seen == {published}  # never 0, never a younger checkout's start
    assert handle.tracker.oldest is record_of(held)
    assert handle.stats.in_use == 1 and len(handle.checkouts()) == 1
    held.close()
    assert_none_out(handle)
    assert handle.stats.checkouts == 1 + 5 * 300


def test_a_connection_the_garbage_collector_returns_leaves_the_oldest_to_the_next(
    instrumented: Instrumented,
) -> None:
    engine, handle = instrumented("gc", pool_size=3)
    stats = handle.stats

    leaked = [engine.connect()]  # the oldest, dropped below without close
    leaked_record = record_of(leaked[0])
    time.sleep(GAP)
    kept, window = timed_connect(engine)
    leaked.clear()
    gc.collect()
    assert stats.gc_returned == 1
    assert handle.tracker.marker(leaked_record) == IDLE  # back in the pool, idle
    assert (stats.in_use, stats.idle) == (1, 1)
    assert_oldest_is(handle, window, record_of(kept))

    leaked.append(engine.connect())  # younger than `kept`: its return changes nothing
    leaked.clear()
    gc.collect()
    assert stats.gc_returned == 2
    assert_oldest_is(handle, window, record_of(kept))
    kept.close()
    assert_none_out(handle)
    assert hold_count(handle) == 3


def test_detaching_the_oldest_checkout_ends_it_and_leaves_the_oldest_to_the_next(
    instrumented: Instrumented,
) -> None:
    engine, handle = instrumented("detach", pool_size=3)
    stats = handle.stats

    first = engine.connect()
    record = record_of(first)
    time.sleep(GAP)
    second, window = timed_connect(engine)
    first.detach()
    assert handle.tracker.marker(record) is None
    assert (stats.detaches, stats.in_use, stats.idle, hold_count(handle)) == (1, 1, 0, 1)
    assert_oldest_is(handle, window, record_of(second))
    first.close()  # closes the detached DBAPI connection: no checkout ends again
    assert (stats.closes, stats.in_use, stats.idle, hold_count(handle)) == (1, 1, 0, 1)
    assert_oldest_is(handle, window, record_of(second))
    second.close()
    assert_none_out(handle)
    assert (stats.idle, hold_count(handle)) == (1, 2)


def test_an_async_connection_the_garbage_collector_detaches_leaves_the_oldest_to_the_next(
    registry: CollectorRegistry, aiosqlite_url: str
) -> None:
    async def main() -> None:
        engine = create_async_engine(aiosqlite_url, pool_size=3)
        handle = pool_exporter.instrument(engine, name="agc", registry=registry)
        stats = handle.stats
        leaked = [await engine.connect()]
        await asyncio.sleep(GAP)
        before = time.time()
        kept = await engine.connect()
        window = (before, time.time())
        with warnings.catch_warnings():  # SQLAlchemy warns about the dropped connection
            warnings.simplefilter("ignore")
            leaked.clear()
            gc.collect()
        # SQLAlchemy detaches an async connection the GC found (no checkin) and terminates it
        assert (stats.gc_returned, stats.detaches, stats.in_use, stats.idle) == (1, 1, 1, 0)
        assert kept.sync_connection is not None
        assert_oldest_is(handle, window, record_of(kept.sync_connection))
        await kept.close()
        assert_none_out(handle)
        assert hold_count(handle) == 2
        await engine.dispose()

    asyncio.run(main())
