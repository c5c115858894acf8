"""The wait users really had: timed-out and cancelled checkouts in the wait histogram under
their outcome, and the checkouts that found no idle connection (waited checkouts)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import create_async_engine

import pool_exporter
from tests.support.exposition import value
from tests.support.pool_counts import waits
from tests.support.procs import wait_until

WAIT_BUCKET = "sqlalchemy_pool_checkout_wait_seconds_bucket"
WAITED = "sqlalchemy_pool_waited_checkouts_total"
WAITING = "sqlalchemy_pool_waiting_checkouts"


def instrumented(registry: CollectorRegistry, url: str, **engine_options: Any) -> sa.Engine:
    engine = sa.create_engine(url, **engine_options)
    pool_exporter.instrument(engine, name="p", registry=registry)
    return engine


def test_a_checkout_timing_out_after_0_2_s_adds_one_wait_of_about_0_2_s_under_timeout(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = instrumented(registry, sqlite_url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    with engine.connect():
        started = time.monotonic()
        with pytest.raises(sa.exc.TimeoutError):
            engine.connect()
        waited = time.monotonic() - started
    assert waits(registry, "p") == {"success": 1, "timeout": 1, "cancelled": 0, "error": 0}
    observed = waits(registry, "p", "_sum")["timeout"]
    assert 0.2 <= observed <= waited  # what the caller itself measured around it
    assert value(registry, WAIT_BUCKET, pool="p", outcome="timeout", le="0.1") == 0
    assert value(registry, WAIT_BUCKET, pool="p", outcome="timeout", le="0.25") == 1
    assert value(registry, "sqlalchemy_pool_checkout_timeouts_total", pool="p") == 1
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="p") == 1


def test_a_checkout_that_fails_to_connect_adds_its_wait_under_error(
    registry: CollectorRegistry, tmp_path: object
) -> None:
    def refuse() -> Any:
        raise OSError("connection refused")

    engine = sa.create_engine("sqlite://", creator=refuse, pool_size=1)
    pool_exporter.instrument(engine, name="p", registry=registry)
    with pytest.raises(OSError):
        engine.connect()
    assert waits(registry, "p") == {"success": 0, "timeout": 0, "cancelled": 0, "error": 1}
    assert value(registry, "sqlalchemy_pool_checkout_errors_total", pool="p") == 1


def test_only_checkouts_that_found_no_idle_connection_count_as_waited(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = instrumented(registry, sqlite_url, pool_size=2, max_overflow=0, pool_timeout=5)
    engine.connect().close()  # the pool was empty: it opened the first connection
    assert value(registry, WAITED, pool="p") == 1
    engine.connect().close()  # the idle one
    assert value(registry, WAITED, pool="p") == 1
    # the idle one again, then none idle: the pool opens its second
    with engine.connect(), engine.connect():
        pass
    assert value(registry, WAITED, pool="p") == 2
    with engine.connect(), engine.connect():  # both idle
        pass
    assert value(registry, WAITED, pool="p") == 2
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="p") == 6


def test_a_caller_that_waits_for_a_connection_to_come_back_counts_as_waited(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = instrumented(registry, sqlite_url, pool_size=1, max_overflow=0, pool_timeout=5)
    engine.connect().close()
    held = engine.connect()
    got = threading.Event()

    def waiter() -> None:
        with engine.connect():
            got.set()

    thread = threading.Thread(target=waiter)
    thread.start()
    wait_until(lambda: value(registry, WAITING, pool="p") > 0, what="the caller to wait")
    assert not got.is_set()
    held.close()
    thread.join()
    assert got.is_set()
    # the opening of the first connection, then the caller that waited for it to come back
    assert value(registry, WAITED, pool="p") == 2
    assert value(registry, "sqlalchemy_pool_connections", pool="p", state="idle") == 1
    assert value(registry, "sqlalchemy_pool_connections", pool="p", state="in_use") == 0


def test_a_caller_that_waits_and_times_out_is_not_a_waited_checkout(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = instrumented(registry, sqlite_url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    with engine.connect(), pytest.raises(sa.exc.TimeoutError):
        engine.connect()
    assert value(registry, WAITED, pool="p") == 1  # the first connection's opening only
    assert value(registry, "sqlalchemy_pool_checkout_timeouts_total", pool="p") == 1


def test_a_connection_recycled_on_its_way_to_a_waiting_caller_still_counts_as_waited(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = instrumented(registry, sqlite_url, pool_size=1, max_overflow=0, pool_recycle=1)
    held = engine.connect()
    thread = threading.Thread(target=lambda: engine.connect().close())
    thread.start()
    wait_until(lambda: value(registry, WAITING, pool="p") > 0, what="the caller to wait")
    time.sleep(1.1)  # past pool_recycle: the waiter's checkout closes and reopens it
    held.close()
    thread.join()
    assert value(registry, WAITED, pool="p") == 2
    assert value(registry, "sqlalchemy_pool_closes_total", pool="p", reason="recycle") == 1
    assert value(registry, "sqlalchemy_pool_connections", pool="p", state="idle") == 1


def test_every_nullpool_checkout_counts_as_waited(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = instrumented(registry, sqlite_url, poolclass=sa.pool.NullPool)
    for _ in range(3):
        engine.connect().close()
    assert value(registry, WAITED, pool="p") == 3


def test_async_callers_that_wait_for_a_connection_count_as_waited(
    registry: CollectorRegistry, aiosqlite_url: str
) -> None:
    async def main() -> None:
        engine = create_async_engine(aiosqlite_url, pool_size=1, max_overflow=0, pool_timeout=5)
        handle = pool_exporter.instrument(engine, name="p", registry=registry)
        async with engine.connect():
            pass  # opens the pool's one connection
        held = await engine.connect().start()

        async def waiter() -> None:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("select 1")

        waiting = [asyncio.create_task(waiter()) for _ in range(2)]
        while handle.stats.waiting < 2:
            await asyncio.sleep(0.005)
        await held.close()
        await asyncio.gather(*waiting)
        await engine.dispose()

    asyncio.run(main())
    assert value(registry, WAITED, pool="p") == 3  # the opening, then the two that waited
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="p") == 4
    assert waits(registry, "p")["success"] == 4
