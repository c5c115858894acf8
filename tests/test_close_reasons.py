"""Why connections close: each reason of `sqlalchemy_pool_closes_total` on real pools, each close
counted under exactly one reason (the test's own listeners count every close beside it)."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import warnings
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import create_async_engine

import pool_exporter
from pool_exporter import metrics as m
from tests.support.exposition import value
from tests.support.pool_counts import CloseCount, closes_by_reason


def instrumented(
    registry: CollectorRegistry, url: str, **engine_options: Any
) -> tuple[sa.Engine, CloseCount]:
    """An engine on `url`, instrumented as pool "p", and the test's own count of its closes."""
    engine = sa.create_engine(url, **engine_options)
    pool_exporter.instrument(engine, name="p", registry=registry)
    return engine, CloseCount(engine)


def only(registry: CollectorRegistry, counted: CloseCount, **expected: int) -> None:
    """The pool's closes are `expected` by reason (0 for the others), and add up to every close
    the test's listeners saw."""
    found = closes_by_reason(registry, "p")
    assert found == {reason: expected.get(reason, 0) for reason in m.CLOSE_REASONS}
    assert sum(found.values()) == counted.total


def test_overflow_churn_counts_each_discarded_overflow_connection(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    # The case: a pool of 1 + 5 and 6 callers at once, then all released. The first
    # one back has room in the pool; the other five are closed.
    engine, counted = instrumented(registry, sqlite_url, pool_size=1, max_overflow=5)
    everyone_out = threading.Barrier(6)

    def caller() -> None:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
            everyone_out.wait(timeout=10)

    callers = [threading.Thread(target=caller) for _ in range(6)]
    for t in callers:
        t.start()
    for t in callers:
        t.join()
    only(registry, counted, overflow=5)
    engine.dispose()
    only(registry, counted, overflow=5, dispose=1)


def test_a_checkout_past_pool_recycle_counts_a_recycle(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, counted = instrumented(registry, sqlite_url, pool_size=1, pool_recycle=1)
    engine.connect().close()
    time.sleep(1.1)
    engine.connect().close()
    only(registry, counted, recycle=1)


def test_an_invalidated_connection_counts_one_of_its_own(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, counted = instrumented(registry, sqlite_url, pool_size=2)
    with engine.connect() as conn:
        conn.invalidate()
    only(registry, counted, invalidated=1)
    engine.connect().close()  # the record reconnects; nothing else closes
    only(registry, counted, invalidated=1)


def test_a_soft_invalidated_connection_is_closed_at_its_next_checkout_as_invalidated(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, counted = instrumented(registry, sqlite_url, pool_size=1)
    with engine.connect() as conn:
        conn.connection.invalidate(soft=True)
    only(registry, counted)  # not closed yet
    time.sleep(0.02)  # SQLAlchemy compares wall-clock stamps
    engine.connect().close()
    only(registry, counted, invalidated=1)


def test_connections_replaced_after_the_pool_was_invalidated_count_as_invalidated(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    # A disconnect seen on one connection invalidates the whole pool: that connection is
    # closed at once, the others at their next checkout, with no invalidate event of their own.
    engine, counted = instrumented(registry, sqlite_url, pool_size=2)
    a, b = engine.connect(), engine.connect()
    b.close()
    time.sleep(0.02)
    engine.pool._invalidate(a.connection)  # what SQLAlchemy does on a disconnect error
    a.close()
    only(registry, counted, invalidated=1)
    with engine.connect(), engine.connect():
        pass
    only(registry, counted, invalidated=2)


def test_a_reset_on_return_that_raises_counts_as_reset_failed(
    registry: CollectorRegistry, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine, counted = instrumented(registry, sqlite_url, pool_size=2)
    conn = engine.connect()
    conn.connection.dbapi_connection.close()  # type: ignore[union-attr]  # the rollback will fail
    conn.close()  # SQLAlchemy logs the failed reset and invalidates the connection
    only(registry, counted, reset_failed=1)
    assert value_of(registry, "sqlalchemy_pool_invalidations_total", soft="false") == 1


def test_dispose_counts_the_idle_connections_it_closes(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, counted = instrumented(registry, sqlite_url, pool_size=3)
    conns = [engine.connect() for _ in range(3)]
    for c in conns[:2]:
        c.close()
    engine.dispose()  # closes the two idle; the one out comes back to the old pool later
    only(registry, counted, dispose=2)
    conns[2].close()
    only(registry, counted, dispose=2)


def test_a_detached_connection_counts_as_detached_when_the_application_closes_it(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, counted = instrumented(registry, sqlite_url, pool_size=2)
    conn = engine.connect()
    conn.detach()
    only(registry, counted)
    conn.close()
    only(registry, counted, detached=1)


def test_an_async_connection_the_garbage_collector_closes_counts_as_gc(
    registry: CollectorRegistry, aiosqlite_url: str
) -> None:
    async def main() -> CloseCount:
        engine = create_async_engine(aiosqlite_url, pool_size=2)
        pool_exporter.instrument(engine, name="p", registry=registry)
        counted = CloseCount(engine)
        conn = await engine.connect().start()
        await conn.exec_driver_sql("select 1")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy warns about the unclosed connection
            del conn
            gc.collect()
            for _ in range(500):  # the cleanup closes it from the event loop
                if counted.total:
                    break
                await asyncio.sleep(0.01)
        await engine.dispose()
        return counted

    counted = asyncio.run(main())
    only(registry, counted, gc=1)


def test_nullpool_closes_every_connection_returned_as_overflow(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, counted = instrumented(registry, sqlite_url, poolclass=sa.pool.NullPool)
    for _ in range(3):
        engine.connect().close()
    only(registry, counted, overflow=3)


def test_singletonthreadpool_closes_the_connections_beyond_its_size_as_overflow(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, counted = instrumented(
        registry, sqlite_url, poolclass=sa.pool.SingletonThreadPool, pool_size=1
    )
    engine.connect().close()
    other = threading.Thread(target=lambda: engine.connect().close())
    other.start()
    other.join()  # a second thread's connection makes room by closing the first one
    only(registry, counted, overflow=1)


def test_staticpool_closes_its_connection_at_dispose(registry: CollectorRegistry) -> None:
    engine, counted = instrumented(registry, "sqlite://", poolclass=sa.pool.StaticPool)
    engine.connect().close()
    engine.dispose()
    only(registry, counted, dispose=1)


def test_a_close_by_application_code_counts_as_other(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, counted = instrumented(registry, sqlite_url, pool_size=2)

    def close_it(dbapi_connection: Any, record: Any) -> None:
        record.close()  # ConnectionPoolEntry.close(), public API, from the application

    sa.event.listen(engine, "checkin", close_it)
    engine.connect().close()
    only(registry, counted, other=1)


def value_of(registry: CollectorRegistry, sample: str, **labels: str) -> float:
    return value(registry, sample, pool="p", **labels)
