"""Long checkouts and leaked connections: the oldest checkout's age, the threshold, the GC."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import warnings
from collections.abc import Iterator
from time import perf_counter
from wsgiref.simple_server import WSGIRequestHandler, make_server

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

import pool_exporter
from pool_exporter.instrument import PoolInstrumentation, current_checkouts
from tests.support.exposition import value
from tests.support.forking import held_by_another_thread, in_child

OLDEST = "sqlalchemy_pool_oldest_checkout_seconds"
LONG = "sqlalchemy_pool_long_checkouts_total"
GC = "sqlalchemy_pool_gc_returned_connections_total"


@pytest.fixture(params=["aiosqlite", "postgresql"])
def async_url(request: pytest.FixtureRequest, aiosqlite_url: str) -> str:
    if request.param == "aiosqlite":
        return aiosqlite_url
    return str(request.getfixturevalue("pg_url"))


def records(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pool_exporter" and r.levelno == level and text in r.getMessage()
    ]


def check_the_held_checkout(
    registry: CollectorRegistry, handle: PoolInstrumentation, caplog: pytest.LogCaptureFixture
) -> None:
    """Asserted 2.2 s into a 2.5 s hold with a 1 s threshold."""
    assert value(registry, OLDEST, pool="held") >= 2.0
    # found by the watcher while still out, not when it came back
    assert value(registry, LONG, pool="held") == 1
    [warning] = records(caplog, logging.WARNING, "checked out for")
    assert "in borrow_and_hold" in warning
    [out] = handle.checkouts()
    assert out.age >= 2.0 and out.long
    assert out.site is not None and out.site.function == "borrow_and_hold"
    assert out.site.filename == __file__


def check_after_return(registry: CollectorRegistry, caplog: pytest.LogCaptureFixture) -> None:
    assert value(registry, OLDEST, pool="held") == 0
    assert value(registry, LONG, pool="held") == 1
    assert len(records(caplog, logging.WARNING, "checked out for")) == 1
    [info] = records(caplog, logging.INFO, "came back after")
    assert "borrow_and_hold" in info
    assert value(registry, GC, pool="held") == 0


def test_a_connection_held_past_the_threshold_is_counted_once_and_logged_with_its_borrower(
    registry: CollectorRegistry, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pool_exporter")
    engine = sa.create_engine(pg_url, pool_size=2)
    handle = pool_exporter.instrument(
        engine, name="held", registry=registry, long_checkout_threshold=1
    )
    try:
        assert value(registry, OLDEST, pool="held") == 0

        def borrow_and_hold() -> None:
            with engine.connect() as conn:
                conn.exec_driver_sql("select 1")
                time.sleep(2.2)
                check_the_held_checkout(registry, handle, caplog)
                time.sleep(0.3)

        borrow_and_hold()
        check_after_return(registry, caplog)
        assert handle.checkouts() == []
    finally:
        engine.dispose()


def test_an_async_connection_held_past_the_threshold_is_counted_once_and_logged(
    registry: CollectorRegistry, async_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pool_exporter")

    async def main() -> None:
        engine = create_async_engine(async_url, pool_size=2)
        handle = pool_exporter.instrument(
            engine, name="held", registry=registry, long_checkout_threshold=1
        )

        async def borrow_and_hold() -> None:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("select 1")
                await asyncio.sleep(2.2)
                check_the_held_checkout(registry, handle, caplog)
                [out] = handle.checkouts()
                assert out.task == "borrower"
                await asyncio.sleep(0.3)

        await asyncio.create_task(borrow_and_hold(), name="borrower")
        check_after_return(registry, caplog)
        await engine.dispose()

    asyncio.run(main())


def test_the_gauge_follows_the_oldest_checkout_still_out(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=3)
    engines.append(engine)
    handle = pool_exporter.instrument(engine, name="p", registry=registry)
    first = engine.connect()
    time.sleep(0.6)
    second = engine.connect()
    time.sleep(0.2)
    assert value(registry, OLDEST, pool="p") >= 0.8
    ages = [c.age for c in handle.checkouts()]
    assert len(ages) == 2 and ages[0] >= 0.8 > ages[1] >= 0.2
    assert handle.checkouts()[0].site is None  # no threshold: no borrow site is captured
    first.close()
    assert 0.2 <= value(registry, OLDEST, pool="p") < 0.8
    second.close()
    assert value(registry, OLDEST, pool="p") == 0
    assert value(registry, LONG, pool="p") == 0


def test_the_gauge_is_right_after_dispose_invalidation_and_detach(
    registry: CollectorRegistry, pg_url: str
) -> None:
    engine = sa.create_engine(pg_url, pool_size=2)
    pool_exporter.instrument(engine, name="p", registry=registry)
    try:
        held = engine.connect()
        time.sleep(0.3)
        engine.dispose()  # the held connection is still out, now of a pool that was replaced
        assert value(registry, OLDEST, pool="p") >= 0.3
        with engine.connect() as conn:  # from the new pool
            conn.exec_driver_sql("select 1")
        assert value(registry, OLDEST, pool="p") >= 0.3
        held.close()
        assert value(registry, OLDEST, pool="p") == 0
        engine.dispose()
        assert value(registry, OLDEST, pool="p") == 0

        conn = engine.connect()
        time.sleep(0.1)
        conn.invalidate()  # returns the record to the pool at once, without its connection
        assert value(registry, OLDEST, pool="p") == 0
        assert value(registry, "sqlalchemy_pool_connections", pool="p", state="in_use") == 0
        conn.close()
        assert value(registry, OLDEST, pool="p") == 0

        conn = engine.connect()
        conn.detach()  # no longer the pool's: it does not age in this gauge
        assert value(registry, OLDEST, pool="p") == 0
        conn.close()
        assert value(registry, OLDEST, pool="p") == 0
        assert value(registry, GC, pool="p") == 0
        assert value(registry, "sqlalchemy_pool_connections", pool="p", state="in_use") == 0
    finally:
        engine.dispose()


def test_a_leaked_connection_returned_by_the_garbage_collector_is_counted_with_its_site(
    registry: CollectorRegistry, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sa.create_engine(pg_url, pool_size=2)
    pool_exporter.instrument(engine, name="leak", registry=registry, long_checkout_threshold=60)
    try:

        def leaky() -> None:
            conn = engine.connect()
            conn.exec_driver_sql("select 1")
            # returns without closing it

        leaky()
        gc.collect()
        assert value(registry, GC, pool="leak") == 1
        assert value(registry, OLDEST, pool="leak") == 0
        assert value(registry, "sqlalchemy_pool_connections", pool="leak", state="in_use") == 0
        [warning] = records(caplog, logging.WARNING, "garbage collector")
        assert "in leaky" in warning
        with engine.connect() as conn:  # a normal close is not counted
            conn.exec_driver_sql("select 1")
        assert value(registry, GC, pool="leak") == 1
    finally:
        engine.dispose()


def test_a_leaked_async_connection_is_counted(registry: CollectorRegistry, async_url: str) -> None:
    async def main() -> None:
        engine = create_async_engine(async_url, pool_size=2)
        pool_exporter.instrument(engine, name="aleak", registry=registry)

        async def leaky() -> None:
            conn = await engine.connect()
            await conn.exec_driver_sql("select 1")

        await leaky()
        with warnings.catch_warnings():  # SQLAlchemy warns about it too
            warnings.simplefilter("ignore")
            gc.collect()
        assert value(registry, GC, pool="aleak") == 1
        assert value(registry, OLDEST, pool="aleak") == 0
        async with engine.connect() as conn:
            await conn.exec_driver_sql("select 1")
        assert value(registry, GC, pool="aleak") == 1
        await engine.dispose()

    asyncio.run(main())


def test_threads_checking_in_and_out_leave_the_gauge_at_zero(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=4, max_overflow=4)
    engines.append(engine)
    handle = pool_exporter.instrument(engine, name="t", registry=registry)

    def user() -> None:
        for _ in range(300):
            with engine.connect():
                time.sleep(0)  # let the other threads interleave with checkout and checkin

    threads = [threading.Thread(target=user) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert handle.checkouts() == []
    assert value(registry, OLDEST, pool="t") == 0
    assert handle.stats.oldest_checkout_started == 0


def test_a_forked_child_watches_its_own_checkouts_not_its_parents(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=3)
    handle = pool_exporter.instrument(
        engine, name="fork", registry=registry, long_checkout_threshold=0.2
    )
    held = engine.connect()  # out in the parent across the fork

    def child() -> object:
        s = handle.stats
        inherited = (len(handle.checkouts()), s.oldest_checkout_started)
        with engine.connect():
            time.sleep(0.6)  # the child's own watcher must find it while it is out
            during = (s.long_checkouts, len(handle.checkouts()))
        return inherited, during, s.long_checkouts

    inherited, during, after = in_child(child)
    assert inherited == (0, 0.0)
    assert during == (1, 1)
    assert after == 1
    assert len(handle.checkouts()) == 1  # the parent still has its own, counted in the parent
    held.close()
    assert handle.stats.long_checkouts == 1 and handle.checkouts() == []
    engine.dispose()


# The watcher thread calls CheckoutTracker.check_long(now); called here with a `now` an hour
# ahead, it finds a checkout long without sleeping, and a marker set an hour back makes one
# that is long when it comes back, before any watcher looked.
HOUR = 3600.0


@pytest.fixture
def hour(
    registry: CollectorRegistry, sqlite_url: str
) -> Iterator[tuple[sa.Engine, PoolInstrumentation]]:
    """Pool "t" with an hour's threshold: the watcher thread finds nothing during a test."""
    engine = sa.create_engine(sqlite_url, pool_size=2)
    yield (
        engine,
        pool_exporter.instrument(engine, name="t", registry=registry, long_checkout_threshold=HOUR),
    )
    engine.dispose()


def test_a_long_checkout_is_counted_once_whether_the_watcher_or_the_checkin_finds_it_first(
    registry: CollectorRegistry,
    hour: tuple[sa.Engine, PoolInstrumentation],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="pool_exporter")
    engine, handle = hour
    tracker = handle.tracker

    # the watcher finds it first: due in an hour, then found an hour later, and only once
    seen_first = engine.connect()
    due = tracker.check_long(perf_counter())
    assert due is not None and due > perf_counter() + HOUR - 60
    assert value(registry, LONG, pool="t") == 0
    assert tracker.check_long(perf_counter() + HOUR + 1) is None
    assert tracker.check_long(perf_counter() + HOUR + 2) is None
    assert value(registry, LONG, pool="t") == 1
    [out] = handle.checkouts()
    assert out.long
    seen_first.close()
    assert value(registry, LONG, pool="t") == 1

    # the checkin finds it first: it began an hour ago and no watcher looked
    back_first = engine.connect()
    [record] = tracker.out
    record.record_info[tracker.key] -= HOUR + 1
    back_first.close()
    assert value(registry, LONG, pool="t") == 2
    assert tracker.check_long(perf_counter() + 2 * HOUR) is None
    assert value(registry, LONG, pool="t") == 2

    warnings = records(caplog, logging.WARNING, "checked out for")
    assert len(warnings) == 2
    assert all("test_a_long_checkout_is_counted_once" in w for w in warnings)
    assert len(records(caplog, logging.INFO, "came back after")) == 2


def test_a_failure_while_looking_for_long_checkouts_is_counted_and_the_next_look_works(
    registry: CollectorRegistry, hour: tuple[sa.Engine, PoolInstrumentation]
) -> None:
    engine, handle = hour
    tracker = handle.tracker
    with engine.connect():
        # a clock reading that cannot be compared: only this call fails, not the watcher's
        assert tracker.check_long(None) is None  # type: ignore[arg-type]
        assert tracker.check_long(perf_counter() + HOUR + 1) is None
        assert value(registry, LONG, pool="t") == 1
    assert value(registry, "pool_exporter_hook_errors_total", pool="t", hook="long_checkout") == 1


def test_a_forked_child_reports_long_checkouts_though_a_parent_thread_held_the_lock(
    registry: CollectorRegistry, hour: tuple[sa.Engine, PoolInstrumentation]
) -> None:
    engine, handle = hour
    tracker = handle.tracker

    def child() -> object:
        with engine.connect():
            [record] = tracker.out
            record.record_info[tracker.key] -= HOUR + 1  # began an hour ago
        return handle.stats.long_checkouts

    # as if the parent's watcher were reporting a long checkout at the fork
    with held_by_another_thread(tracker._long_lock, most=10):
        assert in_child(child, timeout=5) == 1


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_checkouts_endpoint_lists_the_holders_and_never_sql_or_the_url(
    registry: CollectorRegistry, pg_url: str
) -> None:
    engine = sa.create_engine(pg_url, pool_size=2)
    pool_exporter.instrument(engine, name="shown", registry=registry, long_checkout_threshold=30)
    server = make_server(
        "127.0.0.1", 0, pool_exporter.make_checkouts_wsgi_app(), handler_class=_Quiet
    )
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    try:

        def report_while_holding() -> httpx.Response:
            with engine.connect() as conn:
                conn.exec_driver_sql("select %(secret)s::text", {"secret": "hunter2"})
                time.sleep(0.2)
                return httpx.get(f"http://127.0.0.1:{server.server_port}/", timeout=10)

        response = report_while_holding()
        assert response.status_code == 200
        [held] = response.json()["shown"]
        assert held["age_seconds"] >= 0.2
        assert held["site"].endswith("in report_while_holding")
        assert held["thread"] == threading.current_thread().name
        assert held["long"] is False

        def in_a_transaction() -> None:
            with engine.begin():  # a contextmanager: the site is still the caller
                [c] = current_checkouts()["shown"]
                assert c.site is not None and c.site.function == "in_a_transaction"

        in_a_transaction()

        def in_a_session() -> None:
            with Session(engine) as session:  # the ORM checks out through generated code
                session.execute(sa.text("select 1"))
                [c] = current_checkouts()["shown"]
                assert c.site is not None and c.site.function == "in_a_session"

        in_a_session()
        assert set(held) == {"age_seconds", "site", "thread", "task", "long"}
        # other tests' pools may be listed too; no URL, user, host or parameter of any is
        for secret in ("hunter2", "postgres@", "127.0.0.1", "select"):
            assert secret not in response.text
        after = httpx.get(f"http://127.0.0.1:{server.server_port}/", timeout=10).json()
        assert after["shown"] == []
    finally:
        server.shutdown()
        server.server_close()
        engine.dispose()


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "1", True])
def test_a_bad_threshold_is_refused(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine], bad: object
) -> None:
    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    with pytest.raises(ValueError, match="long_checkout_threshold must be a positive number"):
        pool_exporter.instrument(engine, registry=registry, long_checkout_threshold=bad)  # type: ignore[arg-type]
