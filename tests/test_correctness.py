"""The numbers are exact under contention and through every trap the pool sets."""

from __future__ import annotations

import ctypes
import gc
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import pool_exporter
import pool_exporter.fork
from pool_exporter.instrument import PoolInstrumentation, _handles_lock
from tests.support.exposition import value
from tests.support.forking import held_by_another_thread, in_child
from tests.support.pool_counts import CloseCount, closes_by_reason, waits


@dataclass
class Sampler:
    """Reads the live gauges every millisecond while a test runs."""

    handle: PoolInstrumentation
    samples: list[tuple[int, int, int, int]] = field(default_factory=list)

    @contextmanager
    def running(self) -> Iterator[Sampler]:
        stop = threading.Event()

        def loop() -> None:
            s = self.handle.stats
            while not stop.is_set():
                now = s.snapshot()
                self.samples.append((now.in_use, now.idle, now.waiting, now.overflow))
                time.sleep(0.001)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def assert_sane(self, max_in_use: int) -> None:
        assert self.samples, "the sampler saw nothing"
        assert min(min(s) for s in self.samples) >= 0, "a gauge went negative"
        assert max(s[0] for s in self.samples) <= max_in_use


@dataclass
class Tally:
    ok: int = 0
    timeouts: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def hammer(
    engine: sa.Engine,
    *,
    threads: int,
    per_thread: int,
    hold: tuple[float, float],
    during: Callable[[], None] | None = None,
) -> Tally:
    tally = Tally()
    rng = random.Random(7)

    def user() -> None:
        for _ in range(per_thread):
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql("select 1")
                    time.sleep(rng.uniform(*hold))
            except sa.exc.TimeoutError:
                with tally.lock:
                    tally.timeouts += 1
            else:
                with tally.lock:
                    tally.ok += 1

    workers = [threading.Thread(target=user) for _ in range(threads)]
    for w in workers:
        w.start()
    if during is not None:
        during()
    for w in workers:
        w.join()
    return tally


def instrumented(
    registry: CollectorRegistry, sqlite_url: str, name: str, **engine_options: int
) -> tuple[sa.Engine, PoolInstrumentation]:
    """An engine on `sqlite_url`, instrumented as pool `name`, and its handle."""
    engine = sa.create_engine(sqlite_url, **engine_options)
    return engine, pool_exporter.instrument(engine, name=name, registry=registry)


def assert_quiescent(
    registry: CollectorRegistry, pool: str, engine: sa.Engine, idle: int | None = None
) -> None:
    """Nothing out, nobody waiting, and idle is what the pool really holds (and `idle`, if
    given)."""
    assert value(registry, "sqlalchemy_pool_connections", pool=pool, state="in_use") == 0
    assert value(registry, "sqlalchemy_pool_waiting_checkouts", pool=pool) == 0
    assert value(registry, "sqlalchemy_pool_overflow_connections", pool=pool) == 0
    live = [r for r in list(engine.pool._pool.queue) if r.dbapi_connection is not None]  # type: ignore[attr-defined]
    assert value(registry, "sqlalchemy_pool_connections", pool=pool, state="idle") == len(live)
    assert idle is None or len(live) == idle, (len(live), idle)


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "sqlite":
        return sqlite_url
    return str(request.getfixturevalue("pg_url"))


def test_contending_threads_are_counted_exactly(registry: CollectorRegistry, url: str) -> None:
    engine = sa.create_engine(url, pool_size=2, max_overflow=1, pool_timeout=0.3)
    handle = pool_exporter.instrument(engine, name="tiny", registry=registry)
    closes = CloseCount(engine)
    with Sampler(handle).running() as sampler:
        tally = hammer(engine, threads=8, per_thread=12, hold=(0.02, 0.12))
    assert tally.timeouts > 0 and tally.ok > 0, "the test must produce both outcomes"
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="tiny") == tally.ok
    assert value(registry, "sqlalchemy_pool_checkout_timeouts_total", pool="tiny") == tally.timeouts
    wait_counts = waits(registry, "tiny")
    assert wait_counts["success"] == tally.ok
    assert value(registry, "sqlalchemy_pool_connection_hold_seconds_count", pool="tiny") == tally.ok
    timed_out_waits = value(
        registry,
        "sqlalchemy_pool_checkout_wait_seconds_bucket",
        pool="tiny",
        outcome="success",
        le="0.25",
    )
    assert timed_out_waits <= tally.ok  # successful waits only; none took the whole timeout
    # The timed-out callers' waits are in the histogram too, under their own outcome: each
    # waited the whole 0.3 s timeout.
    assert wait_counts == {
        "success": tally.ok,
        "timeout": tally.timeouts,
        "cancelled": 0,
        "error": 0,
    }
    bucket = "sqlalchemy_pool_checkout_wait_seconds_bucket"
    assert value(registry, bucket, pool="tiny", outcome="timeout", le="0.25") == 0
    assert waits(registry, "tiny", "_sum")["timeout"] >= 0.3 * tally.timeouts
    waited = value(registry, "sqlalchemy_pool_waited_checkouts_total", pool="tiny")
    assert 0 < waited <= tally.ok
    sampler.assert_sane(max_in_use=3)
    assert max(s[2] for s in sampler.samples) > 0, "callers were seen waiting"
    assert max(s[3] for s in sampler.samples) == 1, "the overflow connection was seen"
    assert_quiescent(registry, "tiny", engine)
    # Only overflow connections closed so far (returned to a full pool), each counted once.
    by_reason = closes_by_reason(registry, "tiny")
    assert by_reason["overflow"] == sum(by_reason.values()) == closes.total > 0
    idle = value(registry, "sqlalchemy_pool_connections", pool="tiny", state="idle")
    engine.dispose()
    by_reason = closes_by_reason(registry, "tiny")
    assert by_reason["dispose"] == idle
    assert sum(by_reason.values()) == closes.total == handle.stats.closes


def test_dispose_mid_run_never_drives_gauges_negative_or_leaks(
    registry: CollectorRegistry, url: str
) -> None:
    engine = sa.create_engine(url, pool_size=2, max_overflow=2, pool_timeout=2)
    handle = pool_exporter.instrument(engine, name="d", registry=registry)
    closes = CloseCount(engine)
    pools = []

    def dispose_repeatedly() -> None:
        for _ in range(4):
            time.sleep(0.15)
            engine.dispose()
            pools.append(engine.pool)

    with Sampler(handle).running() as sampler:
        tally = hammer(
            engine, threads=6, per_thread=10, hold=(0.01, 0.05), during=dispose_repeatedly
        )
    assert len(set(map(id, pools))) == 4
    assert tally.timeouts == 0
    # every checkout is counted: the new pool is wrapped before the engine hands it out
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="d") == tally.ok
    sampler.assert_sane(max_in_use=6)
    assert_quiescent(registry, "d", engine)
    engine.dispose()
    assert value(registry, "sqlalchemy_pool_connections", pool="d", state="idle") == 0
    # Closed by dispose() or returned to a full pool (one out across a dispose() comes back
    # to the old pool, whose queue may be full); every close counted under one reason.
    by_reason = closes_by_reason(registry, "d")
    assert sum(by_reason.values()) == closes.total == handle.stats.closes
    assert by_reason["dispose"] > 0
    assert by_reason["dispose"] + by_reason["overflow"] == closes.total


def test_pre_ping_after_backends_are_terminated(
    registry: CollectorRegistry, pg_url: str, pg_app_name: str
) -> None:
    engine = sa.create_engine(
        pg_url,
        pool_size=3,
        pool_pre_ping=True,
        connect_args={"application_name": pg_app_name},
    )
    pool_exporter.instrument(engine, name="pp", registry=registry)
    conns = [engine.connect() for _ in range(3)]
    for c in conns:
        c.close()
    assert value(registry, "sqlalchemy_pool_connections", pool="pp", state="idle") == 3
    _terminate(pg_url, pg_app_name)

    for _ in range(3):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("select 1").scalar() == 1
    assert value(registry, "sqlalchemy_pool_invalidations_total", pool="pp", soft="false") >= 1
    assert value(registry, "sqlalchemy_pool_connects_total", pool="pp") >= 4
    assert value(registry, "sqlalchemy_pool_checkout_errors_total", pool="pp") == 0
    assert_quiescent(registry, "pp", engine)
    assert value(registry, "sqlalchemy_pool_connections", pool="pp", state="idle") == _backends(
        pg_url, pg_app_name
    )
    engine.dispose()


def test_invalidation_of_a_checked_out_connection(
    registry: CollectorRegistry, pg_url: str, pg_app_name: str
) -> None:
    engine = sa.create_engine(pg_url, pool_size=2, connect_args={"application_name": pg_app_name})
    pool_exporter.instrument(engine, name="inv", registry=registry)
    closes = CloseCount(engine)
    with engine.connect() as warm:
        warm.exec_driver_sql("select 1")
    conn = engine.connect()
    _terminate(pg_url, pg_app_name)
    with pytest.raises(sa.exc.OperationalError):
        conn.exec_driver_sql("select 1")
    conn.close()
    assert value(registry, "sqlalchemy_pool_invalidations_total", pool="inv", soft="false") == 1
    by_reason = closes_by_reason(registry, "inv")
    assert by_reason["invalidated"] == sum(by_reason.values()) == closes.total == 1
    assert_quiescent(registry, "inv", engine, idle=0)
    with engine.connect() as conn:  # the empty record reconnects
        conn.exec_driver_sql("select 1")
    assert value(registry, "sqlalchemy_pool_connections", pool="inv", state="idle") == 1
    assert _backends(pg_url, pg_app_name) == 1
    engine.dispose()


def test_soft_invalidation_is_counted_and_replaced_at_next_checkout(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, _ = instrumented(registry, sqlite_url, "soft", pool_size=1)
    with engine.connect() as conn:
        conn.connection.invalidate(soft=True)
    assert value(registry, "sqlalchemy_pool_invalidations_total", pool="soft", soft="true") == 1
    engine.connect().close()
    assert value(registry, "sqlalchemy_pool_connects_total", pool="soft") == 2
    assert value(registry, "sqlalchemy_pool_closes_total", pool="soft", reason="invalidated") == 1
    assert_quiescent(registry, "soft", engine)


def test_recycle_closes_and_reconnects_without_drift(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, _ = instrumented(registry, sqlite_url, "r", pool_size=1, pool_recycle=1)
    engine.connect().close()
    time.sleep(1.1)
    engine.connect().close()
    assert value(registry, "sqlalchemy_pool_connects_total", pool="r") == 2
    assert value(registry, "sqlalchemy_pool_closes_total", pool="r", reason="recycle") == 1
    assert_quiescent(registry, "r", engine, idle=1)


def test_detached_connection_leaves_the_pool(registry: CollectorRegistry, sqlite_url: str) -> None:
    engine, _ = instrumented(registry, sqlite_url, "det", pool_size=2)
    conn = engine.connect()
    conn.detach()
    assert value(registry, "sqlalchemy_pool_connections", pool="det", state="in_use") == 0
    assert value(registry, "sqlalchemy_pool_detaches_total", pool="det") == 1
    assert value(registry, "sqlalchemy_pool_connection_hold_seconds_count", pool="det") == 1
    conn.close()  # closes the detached DBAPI connection
    assert value(registry, "sqlalchemy_pool_closes_total", pool="det", reason="detached") == 1
    assert_quiescent(registry, "det", engine)


def test_refused_reconnects_count_as_connect_errors_and_never_go_negative(
    registry: CollectorRegistry, tmp_path: object
) -> None:
    import sqlite3

    refuse = threading.Event()

    def creator() -> sqlite3.Connection:
        if refuse.is_set():
            raise sqlite3.OperationalError("database refuses connections")
        return sqlite3.connect(f"{tmp_path}/r.db", check_same_thread=False)

    engine = sa.create_engine(
        "sqlite://", creator=creator, poolclass=sa.pool.QueuePool, pool_size=2
    )
    handle = pool_exporter.instrument(engine, name="ref", registry=registry)
    a, b = engine.connect(), engine.connect()
    a.invalidate()
    b.invalidate()
    a.close()
    b.close()
    refuse.set()
    failures = 0
    with Sampler(handle).running() as sampler:
        for _ in range(5):
            try:
                engine.connect()
            except sa.exc.OperationalError:
                failures += 1
    assert failures == 5
    # checkin fires for each failed reconnect without a checkout: naive counting goes -5 here
    sampler.assert_sane(max_in_use=2)
    assert value(registry, "sqlalchemy_pool_connect_errors_total", pool="ref") == 5
    assert value(registry, "sqlalchemy_pool_checkout_errors_total", pool="ref") == 5
    assert_quiescent(registry, "ref", engine)
    refuse.clear()
    with engine.connect() as conn:
        conn.exec_driver_sql("select 1")
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="ref") == 3


def test_a_failing_hook_leaves_checkout_working_and_is_counted(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, handle = instrumented(registry, sqlite_url, "f", pool_size=1)
    handle.stats.wait = None  # type: ignore[assignment]  # observe() now raises AttributeError
    handle.stats.hold = None  # type: ignore[assignment]
    for _ in range(3):
        with engine.connect() as conn:
            assert conn.exec_driver_sql("select 1").scalar() == 1
    assert handle.stats.hook_errors["checkout"] == 3
    assert handle.stats.hook_errors["checkin"] == 3
    assert handle.stats.in_use == 0 and handle.stats.waiting == 0 and handle.stats.idle == 1
    assert handle.stats.checkouts == 3


def test_a_failing_hook_is_logged_once_with_its_traceback_then_at_debug_level(
    registry: CollectorRegistry, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    engine, handle = instrumented(registry, sqlite_url, "logged", pool_size=1)
    handle.stats.hold = None  # type: ignore[assignment]  # every checkin now fails
    caplog.set_level(logging.DEBUG, logger="pool_exporter")
    for _ in range(3):
        engine.connect().close()
    failures = [r for r in caplog.records if "hook 'checkin' failed" in r.getMessage()]
    assert [r.levelno for r in failures] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    assert "Traceback (most recent call last)" in failures[0].getMessage()
    assert "Traceback" not in failures[1].getMessage()
    engine.dispose()


def test_checkout_retried_after_disconnection_error_counts_once(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, _ = instrumented(registry, sqlite_url, "retry", pool_size=1)
    raised = []

    @sa.event.listens_for(engine, "checkout")
    def fork_check_recipe(dbapi_conn: object, rec: object, proxy: object) -> None:
        if not raised:  # SQLAlchemy's documented pid-check recipe raises this once
            raised.append(True)
            raise sa.exc.DisconnectionError("stale connection")

    with engine.connect():
        assert value(registry, "sqlalchemy_pool_connections", pool="retry", state="in_use") == 1
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="retry") == 1
    assert_quiescent(registry, "retry", engine)


def test_pools_that_share_a_connection_count_it_once(registry: CollectorRegistry) -> None:
    static = sa.create_engine("sqlite://", poolclass=sa.pool.StaticPool)
    single = sa.create_engine("sqlite://", poolclass=sa.pool.SingletonThreadPool)
    pool_exporter.instrument(static, name="static", registry=registry)
    pool_exporter.instrument(single, name="single", registry=registry)
    for engine, name in ((static, "static"), (single, "single")):
        outer = engine.raw_connection()
        inner = engine.raw_connection()
        assert value(registry, "sqlalchemy_pool_connections", pool=name, state="in_use") == 1
        inner.close()
        outer.close()
        assert value(registry, "sqlalchemy_pool_connections", pool=name, state="in_use") == 0
        assert value(registry, "sqlalchemy_pool_checkouts_total", pool=name) == 2


def test_old_pool_connections_returned_after_dispose_are_not_idle(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, _ = instrumented(registry, sqlite_url, "old", pool_size=2)
    held = engine.connect()
    engine.dispose()
    assert value(registry, "sqlalchemy_pool_connections", pool="old", state="in_use") == 1
    held.close()  # goes back to the discarded pool
    assert_quiescent(registry, "old", engine, idle=0)


def test_dispose_through_an_option_engine_counts_the_first_checkout(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, _ = instrumented(registry, sqlite_url, "opt", pool_size=2)
    engine.connect().close()
    # An OptionEngine shares its parent's pool; its dispose() bypasses anything patched onto the
    # parent engine instance, but not the pool's recreate().
    engine.execution_options(isolation_level="SERIALIZABLE").dispose()
    with engine.connect():
        assert value(registry, "sqlalchemy_pool_connections", pool="opt", state="in_use") == 1
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="opt") == 2
    wait_count = "sqlalchemy_pool_checkout_wait_seconds_count"
    assert value(registry, wait_count, pool="opt", outcome="success") == 2
    assert_quiescent(registry, "opt", engine, idle=1)


def test_dispose_without_close_abandons_the_idle_connections(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, handle = instrumented(registry, sqlite_url, "abandon", pool_size=3)
    a, b = engine.connect(), engine.connect()
    a.close()
    b.close()
    old = engine.pool
    engine.dispose(close=False)  # the old pool keeps its two connections; the engine drops them
    assert value(registry, "sqlalchemy_pool_connections", pool="abandon", state="idle") == 0
    engine.connect().close()
    assert value(registry, "sqlalchemy_pool_connections", pool="abandon", state="idle") == 1
    old.dispose()  # their close events come from a pool that is no longer counted
    assert handle.stats.closes == 2
    assert_quiescent(registry, "abandon", engine, idle=1)


def test_a_connect_on_the_old_pool_during_dispose_keeps_counting_the_new_one(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, _ = instrumented(registry, sqlite_url, "window", pool_size=2)
    # Engine.dispose(close=False) step by step, with another thread's checkout from the old
    # pool (a new connection) landing between recreate() and the assignment.
    old = engine.pool
    new = old.recreate()
    old.connect().close()
    engine.pool = new
    engine.connect().close()
    assert value(registry, "sqlalchemy_pool_connections", pool="window", state="idle") == 1
    assert_quiescent(registry, "window", engine)


def test_a_failure_while_adopting_a_new_pool_leaves_dispose_working(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, handle = instrumented(registry, sqlite_url, "adopt", pool_size=1)
    handle.stats.configure = None  # type: ignore[assignment,method-assign]  # now raises
    engine.dispose()
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select 1").scalar() == 1
    assert handle.stats.hook_errors["recreate"] == 1
    assert value(registry, "pool_exporter_hook_errors_total", pool="adopt", hook="recreate") == 1


def test_instrumenting_while_connections_are_out_never_goes_negative_and_converges(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=3)
    a, b = engine.connect(), engine.connect()
    a.close()  # idle before instrumentation
    pool_exporter.instrument(engine, name="late", registry=registry)
    b.close()  # out before instrumentation, returned after: idle now, and never in use -1
    assert value(registry, "sqlalchemy_pool_connections", pool="late", state="in_use") == 0
    assert value(registry, "sqlalchemy_pool_connections", pool="late", state="idle") == 1
    c, d = engine.connect(), engine.connect()
    assert value(registry, "sqlalchemy_pool_connections", pool="late", state="in_use") == 2
    c.close()
    d.close()
    # every connection has now been through a checkin the exporter saw: exact again
    assert_quiescent(registry, "late", engine, idle=2)
    engine.dispose()


def test_forked_child_reports_its_own_numbers_not_its_parents(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, handle = instrumented(registry, sqlite_url, "fork", pool_size=3)
    for _ in range(4):
        engine.connect().close()
    held = engine.connect()  # out in the parent across the fork

    def child() -> object:
        s = handle.stats
        before = (s.checkouts, s.in_use, s.idle)
        with engine.connect():
            during = s.in_use
        return before, during, (s.checkouts, s.in_use, s.idle)

    before, during, after = in_child(child)
    assert before == (0, 0, 0)
    assert during == 1
    assert after == (1, 0, 1)
    assert handle.stats.checkouts == 5 and handle.stats.in_use == 1  # the parent is untouched
    held.close()
    engine.dispose()


def test_a_failure_after_fork_is_counted_under_its_own_hook_and_the_child_goes_on(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, handle = instrumented(registry, sqlite_url, "forkfail", pool_size=1)
    handle.stats.reset = None  # type: ignore[assignment,method-assign]  # now raises in the child

    def child() -> object:
        with engine.connect() as conn:
            answer = conn.exec_driver_sql("select 1").scalar()
        return answer, {k: v for k, v in handle.stats.hook_errors.items() if v}

    answer, hooks = in_child(child)
    assert answer == 1
    assert hooks == {"fork": 1}
    assert value(registry, "pool_exporter_hook_errors_total", pool="forkfail", hook="fork") == 0
    engine.dispose()


@pytest.mark.serial  # a fork past Python's hooks: no other thread may hold a lock then
def test_a_child_forked_past_pythons_fork_hooks_is_reset_by_the_fork_entry_point(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=2)
    handle = pool_exporter.instrument(
        engine, name="rawfork", registry=registry, dispose_on_fork=True
    )
    for _ in range(3):
        engine.connect().close()
    held = engine.connect()
    parent_pool = engine.pool

    def child() -> object:
        s = handle.stats
        inherited = (s.checkouts, s.in_use)
        pool_exporter.fork.reset_as_forked_child()
        reset = (s.checkouts, s.in_use, len(handle.checkouts()), engine.pool is parent_pool)
        with engine.connect():
            during = s.in_use
        return inherited, reset, during, s.checkouts

    # libc's fork() called directly, as a server written in C forks its workers: Python's
    # os.register_at_fork hooks do not run. PyDLL keeps the GIL held across the call, so the
    # child's only thread has it.
    inherited, reset, during, checkouts = in_child(child, fork=ctypes.PyDLL(None).fork)
    assert inherited == (4, 1)  # no hook ran: without the call the child counts as its parent
    assert reset == (0, 0, 0, False)
    assert (during, checkouts) == (1, 1)
    assert handle.stats.checkouts == 4 and handle.stats.in_use == 1
    held.close()
    engine.dispose()


def test_a_fork_while_another_thread_instruments_leaves_the_child_able_to_instrument(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    def child() -> object:
        engine, handle = instrumented(registry, sqlite_url, "after")
        engine.connect().close()
        return handle.stats.checkouts

    # as if another thread were inside instrument() at the fork: the fork waits for it
    with held_by_another_thread(_handles_lock):
        assert in_child(child, timeout=5) == 1


def test_dispose_on_fork_gives_the_child_a_fresh_pool(
    registry: CollectorRegistry, pg_url: str, pg_app_name: str
) -> None:
    engine = sa.create_engine(pg_url, pool_size=2, connect_args={"application_name": pg_app_name})
    handle = pool_exporter.instrument(engine, name="pf", registry=registry, dispose_on_fork=True)
    with engine.connect() as conn:
        parent_backend = conn.exec_driver_sql("select pg_backend_pid()").scalar()

    def child() -> object:
        with engine.connect() as conn:
            return conn.exec_driver_sql("select pg_backend_pid()").scalar(), handle.stats.connects

    child_backend, child_connects = in_child(child)
    assert child_backend != parent_backend
    assert child_connects == 1
    with engine.connect() as conn:  # the parent's pooled connection still works
        assert conn.exec_driver_sql("select pg_backend_pid()").scalar() == parent_backend
    engine.dispose()


def _terminate(pg_url: str, app_name: str) -> None:
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(
            sa.text(
                "select pg_terminate_backend(pid) from pg_stat_activity "
                "where application_name = :name"
            ),
            {"name": app_name},
        )
    admin.dispose()
    time.sleep(0.1)


def _backends(pg_url: str, app_name: str) -> int:
    admin = sa.create_engine(pg_url, poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        n = conn.execute(
            sa.text("select count(*) from pg_stat_activity where application_name = :name"),
            {"name": app_name},
        ).scalar_one()
    admin.dispose()
    return int(n)


def test_garbage_collected_connection_is_returned(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine, _ = instrumented(registry, sqlite_url, "gc", pool_size=1)
    conn = engine.connect()
    del conn
    gc.collect()
    assert_quiescent(registry, "gc", engine)
    assert value(registry, "sqlalchemy_pool_connection_hold_seconds_count", pool="gc") == 1
