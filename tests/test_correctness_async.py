"""The same exactness for asyncio engines: many tasks, cancellation, garbage collection."""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import warnings
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

import pool_exporter
from pool_exporter.instrument import PoolInstrumentation
from tests.support.exposition import value
from tests.support.pool_counts import CloseCount, closes_by_reason, waits

P = ParamSpec("P")


@pytest.fixture(params=["aiosqlite", "postgresql"])
def async_url(request: pytest.FixtureRequest, aiosqlite_url: str) -> str:
    if request.param == "aiosqlite":
        return aiosqlite_url
    return str(request.getfixturevalue("pg_url"))


def run_async(test: Callable[P, Coroutine[Any, Any, None]]) -> Callable[P, None]:
    """`test`, an async test function, run to the end in a fresh event loop."""

    @functools.wraps(test)
    def run(*args: P.args, **kwargs: P.kwargs) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


def instrumented(
    registry: CollectorRegistry, url: str, name: str, **engine_options: int
) -> tuple[AsyncEngine, PoolInstrumentation]:
    """An async engine on `url`, instrumented as pool `name`, and its handle."""
    engine = create_async_engine(url, **engine_options)
    return engine, pool_exporter.instrument(engine, name=name, registry=registry)


NewEngine = Callable[..., tuple[AsyncEngine, PoolInstrumentation]]


@pytest.fixture
def new_engine(registry: CollectorRegistry, async_url: str) -> NewEngine:
    """`instrumented` on `async_url` into `registry`: takes the pool's name and engine options."""
    return functools.partial(instrumented, registry, async_url)


def assert_quiescent(registry: CollectorRegistry, pool: str, engine: AsyncEngine) -> None:
    assert value(registry, "sqlalchemy_pool_connections", pool=pool, state="in_use") == 0
    assert value(registry, "sqlalchemy_pool_waiting_checkouts", pool=pool) == 0
    assert value(registry, "sqlalchemy_pool_overflow_connections", pool=pool) == 0
    assert value(registry, "sqlalchemy_pool_connections", pool=pool, state="idle") == (
        engine.sync_engine.pool.checkedin()  # type: ignore[attr-defined]
    )


def test_contending_tasks_are_counted_exactly(registry: CollectorRegistry, async_url: str) -> None:
    ok = timeouts = 0
    lowest = 0
    peak_waiting = 0

    async def main() -> None:
        nonlocal ok, timeouts, lowest, peak_waiting
        engine, handle = instrumented(
            registry, async_url, "tasks", pool_size=2, max_overflow=1, pool_timeout=0.3
        )
        closes = CloseCount(engine)
        rng = random.Random(3)

        async def user() -> None:
            nonlocal ok, timeouts
            for _ in range(6):
                try:
                    async with engine.connect() as conn:
                        await conn.exec_driver_sql("select 1")
                        await asyncio.sleep(rng.uniform(0.05, 0.2))
                except sa.exc.TimeoutError:
                    timeouts += 1
                else:
                    ok += 1

        async def watch() -> None:
            nonlocal lowest, peak_waiting
            s = handle.stats
            while True:
                lowest = min(lowest, s.in_use, s.idle, s.waiting, s.overflow)
                peak_waiting = max(peak_waiting, s.waiting)
                assert s.in_use <= 3
                await asyncio.sleep(0.002)

        watcher = asyncio.create_task(watch())
        await asyncio.gather(*(user() for _ in range(12)))
        watcher.cancel()
        assert_quiescent(registry, "tasks", engine)
        await engine.dispose()
        by_reason = closes_by_reason(registry, "tasks")
        assert sum(by_reason.values()) == closes.total == handle.stats.closes
        assert by_reason["overflow"] + by_reason["dispose"] == closes.total

    asyncio.run(main())
    assert ok > 0 and timeouts > 0
    assert lowest == 0 and peak_waiting > 0
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="tasks") == ok
    assert value(registry, "sqlalchemy_pool_checkout_timeouts_total", pool="tasks") == timeouts
    wait_counts = waits(registry, "tasks")
    assert wait_counts == {"success": ok, "timeout": timeouts, "cancelled": 0, "error": 0}
    assert waits(registry, "tasks", "_sum")["timeout"] >= 0.3 * timeouts
    assert 0 < value(registry, "sqlalchemy_pool_waited_checkouts_total", pool="tasks") <= ok


@run_async
async def test_cancellation_while_waiting_is_counted_and_leaves_nobody_waiting(
    registry: CollectorRegistry, new_engine: NewEngine
) -> None:
    engine, handle = new_engine("cancel", pool_size=1, max_overflow=0, pool_timeout=5)
    async with engine.connect():
        waiter = asyncio.create_task(engine.connect().start())
        await asyncio.sleep(0.2)
        assert handle.stats.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert handle.stats.waiting == 0
        assert handle.stats.in_use == 1
    assert value(registry, "sqlalchemy_pool_checkout_cancellations_total", pool="cancel") == 1
    # the cancelled caller's wait (0.2 s and a little) is in the wait histogram, as cancelled
    assert waits(registry, "cancel")["cancelled"] == 1
    assert 0.2 <= waits(registry, "cancel", "_sum")["cancelled"] < 5
    assert value(registry, "sqlalchemy_pool_checkout_timeouts_total", pool="cancel") == 0
    assert_quiescent(registry, "cancel", engine)
    async with engine.connect() as conn:  # the pool is still whole
        await conn.exec_driver_sql("select 1")
    await engine.dispose()


@run_async
async def test_dispose_mid_run_keeps_async_gauges_sane(
    registry: CollectorRegistry, new_engine: NewEngine
) -> None:
    engine, handle = new_engine("adispose", pool_size=2, max_overflow=2, pool_timeout=3)
    closes = CloseCount(engine)
    done = 0

    async def user() -> None:
        nonlocal done
        for _ in range(8):
            async with engine.connect() as conn:
                await conn.exec_driver_sql("select 1")
                await asyncio.sleep(0.01)
            done += 1

    async def disposer() -> None:
        for _ in range(3):
            await asyncio.sleep(0.05)
            await engine.dispose()
            s = handle.stats
            assert min(s.in_use, s.idle, s.waiting) >= 0

    await asyncio.gather(disposer(), *(user() for _ in range(5)))
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="adispose") == done
    assert_quiescent(registry, "adispose", engine)
    await engine.dispose()
    by_reason = closes_by_reason(registry, "adispose")
    assert sum(by_reason.values()) == closes.total == handle.stats.closes
    assert by_reason["dispose"] > 0
    assert by_reason["overflow"] + by_reason["dispose"] == closes.total


@run_async
async def test_garbage_collected_async_connection_is_released(
    registry: CollectorRegistry, aiosqlite_url: str
) -> None:
    engine, _ = instrumented(registry, aiosqlite_url, "agc", pool_size=2)
    conn = await engine.connect().start()
    await conn.exec_driver_sql("select 1")
    assert value(registry, "sqlalchemy_pool_connections", pool="agc", state="in_use") == 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy warns about the unclosed connection
        del conn
        gc.collect()
        await asyncio.sleep(0.05)
    # an async connection collected by the GC gets detach + close_detached, never checkin
    assert value(registry, "sqlalchemy_pool_connections", pool="agc", state="in_use") == 0
    assert value(registry, "sqlalchemy_pool_detaches_total", pool="agc") == 1
    await engine.dispose()
