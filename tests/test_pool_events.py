"""What SQLAlchemy's pools do that the exporter's design rests on, observed on real pools with
nothing of pool-exporter attached: the raw event sequences of docs/internals.md."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

POOL_EVENTS = (
    "first_connect",
    "connect",
    "checkout",
    "checkin",
    "reset",
    "invalidate",
    "soft_invalidate",
    "close",
    "detach",
    "close_detached",
)


def record_events(engine: sa.Engine) -> list[str]:
    """Every pool event the engine's pools fire from now on, by name, in order."""
    log: list[str] = []

    def recorder(name: str) -> Callable[..., None]:
        def listener(*args: Any, **kwargs: Any) -> None:
            log.append(name)

        return listener

    for name in POOL_EVENTS:
        sa.event.listen(engine, name, recorder(name))
    return log


def test_no_event_fires_while_a_caller_waits_nor_when_queuepool_times_out(
    sqlite_url: str,
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=1, max_overflow=0, pool_timeout=0.5)
    held = engine.connect()
    log = record_events(engine)
    errors: list[str] = []
    sa.event.listen(engine, "handle_error", lambda context: errors.append("handle_error"))
    started = time.monotonic()
    with pytest.raises(sa.exc.TimeoutError) as raised:
        engine.connect()
    assert time.monotonic() - started >= 0.5  # it waited the whole pool timeout
    assert log == [] and errors == []
    # SQLAlchemy's TimeoutError is its own class: `except TimeoutError` would not catch it
    assert not isinstance(raised.value, TimeoutError)
    held.close()
    engine.dispose()


def test_a_failed_reconnect_fires_checkin_without_a_checkout(tmp_path: object) -> None:
    refuse = threading.Event()

    def creator() -> sqlite3.Connection:
        if refuse.is_set():
            raise sqlite3.OperationalError("database refuses connections")
        return sqlite3.connect(f"{tmp_path}/r.db", check_same_thread=False)

    engine = sa.create_engine("sqlite://", creator=creator, poolclass=sa.pool.QueuePool)
    conn = engine.connect()
    conn.invalidate()
    conn.close()
    log = record_events(engine)
    refuse.set()
    with pytest.raises(sa.exc.OperationalError):
        engine.connect()
    assert log == ["checkin"]


def test_a_checkout_retried_after_disconnection_error_fires_checkout_twice(
    sqlite_url: str,
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=1)
    engine.connect().close()
    log = record_events(engine)
    raised: list[bool] = []

    @sa.event.listens_for(engine, "checkout")
    def stale_once(dbapi_connection: object, record: object, proxy: object) -> None:
        if not raised:  # SQLAlchemy's pessimistic-disconnect recipe raises this
            raised.append(True)
            raise sa.exc.DisconnectionError("stale connection")

    engine.connect().close()
    assert log.count("checkout") == 2 and log.count("checkin") == 1, log


def test_a_detached_connection_never_gets_checkin(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=1)
    conn = engine.connect()
    log = record_events(engine)
    conn.detach()
    conn.close()
    assert "detach" in log and "close_detached" in log and "checkin" not in log, log


def test_a_garbage_collected_async_connection_gets_detach_and_never_checkin(
    aiosqlite_url: str,
) -> None:
    async def main() -> list[str]:
        engine = create_async_engine(aiosqlite_url, pool_size=1)
        conn = await engine.connect().start()
        await conn.exec_driver_sql("select 1")
        log = record_events(engine.sync_engine)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SQLAlchemy warns about the unclosed connection
            del conn
            gc.collect()
            await asyncio.sleep(0.05)
        await engine.dispose()
        return log

    log = asyncio.run(main())
    assert "detach" in log and "close_detached" in log and "checkin" not in log, log


def test_a_garbage_collected_sync_connection_is_checked_in(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=1)
    conn = engine.connect()
    log = record_events(engine)
    del conn
    gc.collect()
    assert "checkin" in log and "detach" not in log, log


@pytest.mark.parametrize(
    ("poolclass", "expected"),
    [
        # two checkout events and one checkin: counting +1/-1 leaves one "in use" for ever
        (sa.pool.StaticPool, ["checkout", "checkout", "reset", "checkin", "reset"]),
        # one checkout event for two checkouts through the pool's connect()
        (sa.pool.SingletonThreadPool, ["checkout", "reset", "checkin"]),
    ],
)
def test_staticpool_and_singletonthreadpool_hand_out_a_connection_that_is_already_out(
    poolclass: type[sa.pool.Pool], expected: list[str]
) -> None:
    engine = sa.create_engine("sqlite://", poolclass=poolclass)
    engine.connect().close()
    log = record_events(engine)
    outer = engine.raw_connection()
    inner = engine.raw_connection()
    assert inner._connection_record is outer._connection_record  # type: ignore[attr-defined]
    inner.close()
    outer.close()
    assert log == expected


def test_listeners_on_the_engine_follow_dispose_but_a_patched_pool_method_does_not(
    sqlite_url: str,
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=1)
    log = record_events(engine)
    calls: list[str] = []
    original = engine.pool.connect

    def connect() -> Any:
        calls.append("wrapper")
        return original()

    engine.pool.connect = connect  # type: ignore[method-assign]
    engine.connect().close()
    old = engine.pool
    engine.dispose()  # engine.pool = engine.pool.recreate(): a new pool object
    assert engine.pool is not old
    engine.connect().close()
    assert calls == ["wrapper"]  # the second checkout went through the new pool's own connect
    assert log.count("checkout") == 2 and log.count("connect") == 2


def test_an_async_engine_takes_no_listeners_its_sync_engine_does(aiosqlite_url: str) -> None:
    engine = create_async_engine(aiosqlite_url)
    with pytest.raises(NotImplementedError):
        sa.event.listen(engine, "checkout", lambda *args: None)
    log = record_events(engine.sync_engine)

    async def main() -> None:
        async with engine.connect() as conn:
            await conn.exec_driver_sql("select 1")
        await engine.dispose()

    asyncio.run(main())
    assert log.count("checkout") == 1 and log.count("checkin") == 1, log


def test_a_connection_out_across_dispose_is_checked_in_to_the_pool_it_came_from(
    sqlite_url: str,
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=2)
    pools: list[object] = []
    sa.event.listen(
        engine, "checkin", lambda dbapi, record: pools.append(record._ConnectionRecord__pool)
    )
    held = engine.connect()
    old = engine.pool
    engine.dispose()
    held.close()
    assert pools == [old] and old is not engine.pool
    assert old.checkedin() == 1 and engine.pool.checkedin() == 0  # type: ignore[attr-defined]
