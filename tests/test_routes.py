"""Who holds the connections: checkouts, connection-seconds and waited checkouts by route
(`instrument(engine, route=...)`), exact under threads and capped at `max_routes` series."""

from __future__ import annotations

import contextvars
import logging
import random
import sys
import threading
import time
from collections import Counter, defaultdict

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import pool_exporter
from pool_exporter import metrics as m
from pool_exporter.routes import ROUTE_CHARS, ROUTE_UPDATES, LockedRoutes, RouteCap, Totals
from tests.support.exposition import scrape, value
from tests.support.forking import in_child

current_route: contextvars.ContextVar[str | None] = contextvars.ContextVar("route", default=None)


def by_route(registry: CollectorRegistry, metric: m.Metric, pool: str) -> dict[str, float]:
    return {
        dict(labels)["route"]: v
        for (name, labels), v in scrape(registry).items()
        if name == metric.sample and dict(labels)["pool"] == pool
    }


def test_route_totals_under_16_threads_equal_what_the_test_counted(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=3, max_overflow=2, pool_timeout=10)
    engines.append(engine)
    pool_exporter.instrument(engine, name="r", registry=registry, route=current_route.get)
    routes = ["/orders/{id}", "/users/{id}", "/search", "tasks.send_push"]
    counted: Counter[str] = Counter()
    held: defaultdict[str, float] = defaultdict(float)
    lock = threading.Lock()

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(15):
            route = rng.choice(routes)
            current_route.set(route)
            started = time.perf_counter()
            with engine.connect() as conn:
                conn.exec_driver_sql("select 1")
                time.sleep(rng.uniform(0.001, 0.01))
            with lock:
                counted[route] += 1
                held[route] += time.perf_counter() - started

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert by_route(registry, m.ROUTE_CHECKOUTS, "r") == {**counted, m.OTHER_ROUTES: 0}
    seconds = by_route(registry, m.ROUTE_HOLD, "r")
    for route in routes:  # each hold is inside the test's own stopwatch around it
        assert 0 < seconds[route] <= held[route]
    waited = by_route(registry, m.ROUTE_WAITED, "r")
    assert sum(waited.values()) == value(
        registry, "sqlalchemy_pool_waited_checkouts_total", pool="r"
    )
    assert sum(counted.values()) == value(registry, "sqlalchemy_pool_checkouts_total", pool="r")
    hold_sum = value(registry, "sqlalchemy_pool_connection_hold_seconds_sum", pool="r")
    assert sum(seconds.values()) == pytest.approx(hold_sum)


def test_50_distinct_routes_give_at_most_max_routes_plus_one_series_and_exact_totals(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=2)
    engines.append(engine)
    pool_exporter.instrument(
        engine, name="many", registry=registry, route=current_route.get, max_routes=5
    )
    for n in range(50):
        current_route.set(f"/item/{n}")  # a route made from user input
        for _ in range(1 + n % 3):
            engine.connect().close()
    checkouts = value(registry, "sqlalchemy_pool_checkouts_total", pool="many")
    hold_sum = value(registry, "sqlalchemy_pool_connection_hold_seconds_sum", pool="many")
    for metric, total in ((m.ROUTE_CHECKOUTS, checkouts), (m.ROUTE_HOLD, hold_sum)):
        series = by_route(registry, metric, "many")
        assert len(series) == 5 + 1 and m.OTHER_ROUTES in series
        assert sum(series.values()) == pytest.approx(total)
    assert len(by_route(registry, m.ROUTE_WAITED, "many")) == 6


def test_a_route_function_that_raises_is_a_hook_error_logged_once_never_the_apps(
    registry: CollectorRegistry,
    sqlite_url: str,
    engines: list[sa.Engine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_route() -> str:
        raise LookupError("no request context")

    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    pool_exporter.instrument(engine, name="br", registry=registry, route=broken_route)
    with caplog.at_level(logging.DEBUG, logger="pool_exporter"):
        for _ in range(3):
            with engine.connect() as conn:
                assert conn.exec_driver_sql("select 1").scalar() == 1
    errors = value(registry, "pool_exporter_hook_errors_total", pool="br", hook="route")
    assert errors == 3
    logged = [r for r in caplog.records if "'route'" in r.getMessage()]
    assert [r.levelno for r in logged] == [logging.ERROR, logging.DEBUG, logging.DEBUG]
    assert "LookupError" in logged[0].getMessage()
    # counted all the same: under "(none)", so the routes still add up to every checkout
    assert by_route(registry, m.ROUTE_CHECKOUTS, "br") == {m.NO_ROUTE: 3, m.OTHER_ROUTES: 0}


def test_a_route_that_is_not_a_string_is_a_hook_error_and_long_ones_are_cut(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    answers: list[object] = [42, "x" * 500, None, ""]
    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    pool_exporter.instrument(engine, name="odd", registry=registry, route=lambda: answers.pop(0))
    for _ in range(4):
        engine.connect().close()
    assert value(registry, "pool_exporter_hook_errors_total", pool="odd", hook="route") == 1
    assert by_route(registry, m.ROUTE_CHECKOUTS, "odd") == {
        m.NO_ROUTE: 3,  # the int, None and ""
        "x" * ROUTE_CHARS: 1,
        m.OTHER_ROUTES: 0,
    }


def test_route_is_called_once_per_checkout_and_never_without_it(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    calls = 0

    def route() -> str:
        nonlocal calls
        calls += 1
        return "/r"

    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    handle = pool_exporter.instrument(engine, name="once", registry=registry, route=route)
    for _ in range(5):
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    assert calls == 5
    handle.uninstrument()
    engine.connect().close()
    assert calls == 5
    plain = sa.create_engine(sqlite_url)
    engines.append(plain)
    pool_exporter.instrument(plain, name="plain", registry=registry)
    plain.connect().close()
    assert not by_route(registry, m.ROUTE_CHECKOUTS, "plain")


def test_a_detached_connection_ends_its_routes_hold(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    pool_exporter.instrument(engine, name="det", registry=registry, route=lambda: "/export")
    conn = engine.connect()
    time.sleep(0.02)
    conn.detach()
    assert by_route(registry, m.ROUTE_HOLD, "det")["/export"] >= 0.02
    conn.close()


def test_a_forked_child_counts_only_its_own_routes(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    handle = pool_exporter.instrument(engine, name="f", registry=registry, route=lambda: "/p")
    engine.connect().close()
    held = engine.connect()  # out in the parent across the fork: its hold is the parent's

    def child() -> object:
        engine.connect().close()
        served = dict(handle.routes.serve())  # type: ignore[union-attr]
        return served["/p"][0], len(handle.routes.current)  # type: ignore[union-attr]

    assert in_child(child) == (1, 0)
    held.close()
    assert by_route(registry, m.ROUTE_CHECKOUTS, "f")["/p"] == 2


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"route": "/orders"}, TypeError),
        ({"route": lambda: "/r", "max_routes": 0}, ValueError),
        ({"route": lambda: "/r", "max_routes": True}, ValueError),
        ({"route": lambda: "/r", "max_routes": 2.5}, ValueError),
    ],
)
def test_bad_route_arguments_raise_one_clear_error(
    registry: CollectorRegistry, sqlite_url: str, kwargs: dict[str, object], error: type
) -> None:
    engine = sa.create_engine(sqlite_url)
    with pytest.raises(error, match="route"):
        pool_exporter.instrument(engine, registry=registry, **kwargs)  # type: ignore[arg-type]
    engine.dispose()


# -- the cap, on its own ------------------------------------------------------------------------


def served(
    cap: RouteCap, values: dict[str, Totals], rest: Totals = (0, 0.0, 0)
) -> dict[str, Totals]:
    return dict(cap.serve(values, rest))


def test_the_busiest_routes_by_connection_seconds_get_the_series() -> None:
    cap = RouteCap(2)
    out = served(cap, {"a": (9, 1.0, 0), "b": (1, 5.0, 0), "c": (3, 3.0, 1)}, (4, 2.0, 1))
    assert out == {"b": (1, 5.0, 0), "c": (3, 3.0, 1), m.OTHER_ROUTES: (13, 3.0, 1)}


def test_a_route_that_becomes_busiest_takes_a_series_without_any_series_going_down() -> None:
    cap = RouteCap(1)
    assert served(cap, {"a": (1, 1.0, 0), "b": (1, 0.5, 0)}) == {
        "a": (1, 1.0, 0),
        m.OTHER_ROUTES: (1, 0.5, 0),
    }
    # b overtakes a, but not by PROMOTE: no swap, so two routes of about one load do not flap
    assert served(cap, {"a": (2, 2.0, 0), "b": (2, 2.4, 0)})["a"] == (2, 2.0, 0)
    # b holds well over a: it takes the series, starting from zero, what it counted while in
    # (other) staying there; a's counts go to (other)
    out = served(cap, {"a": (3, 3.0, 0), "b": (5, 9.0, 1)})
    assert out == {"b": (0, 0.0, 0), m.OTHER_ROUTES: (8, 12.0, 1)}
    out = served(cap, {"a": (3, 3.0, 0), "b": (6, 10.0, 1)})
    assert out == {"b": (1, 1.0, 0), m.OTHER_ROUTES: (8, 12.0, 1)}


def test_served_series_never_decrease_as_routes_come_and_go() -> None:
    rng = random.Random(5)
    cap = RouteCap(3)
    totals: dict[str, list[float]] = defaultdict(lambda: [0, 0.0, 0])
    last: dict[str, Totals] = {}
    for _ in range(300):
        name = f"/r{min(int(rng.expovariate(0.3)), 12)}"
        t = totals[name]
        t[0] += 1
        t[1] += rng.uniform(0.001, 0.5)
        t[2] += rng.random() < 0.2
        values = {n: (int(v[0]), v[1], int(v[2])) for n, v in totals.items()}
        out = served(cap, values)
        assert len(out) <= 4
        assert sum(v[0] for v in out.values()) == sum(v[0] for v in values.values())
        assert sum(v[1] for v in out.values()) == pytest.approx(sum(v[1] for v in values.values()))
        for route, now in out.items():
            before = last.get(route)
            if before is not None:
                assert all(b <= n + 1e-9 for b, n in zip(before, now, strict=True)), route
        # a route that lost its series starts again from zero if it comes back
        last = out


@pytest.mark.parametrize("name", ROUTE_UPDATES)
def test_the_locked_variant_counts_routes_under_its_lock(name: str) -> None:
    routes = LockedRoutes(lambda: "/r", 5, lambda hook, exc: None)
    routes.began("record", False)  # something out, for ended
    calls = {"began": ("other", True), "ended": ("record", 0.5), "totals": ()}
    done = threading.Event()

    def update() -> None:
        getattr(routes, name)(*calls[name])
        done.set()

    call = threading.Thread(target=update)
    with routes._lock:  # another thread's update in progress
        call.start()
        assert not done.wait(0.05), f"LockedRoutes.{name} ran without the lock"
    assert done.wait(5)
    call.join()
    assert routes.totals()[0]["/r"][0] == (2 if name == "began" else 1)


def test_a_free_threaded_build_gets_the_locked_variant(
    registry: CollectorRegistry,
    sqlite_url: str,
    engines: list[sa.Engine],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    handle = pool_exporter.instrument(engine, name="ft", registry=registry, route=lambda: "/r")
    assert isinstance(handle.routes, LockedRoutes)
    engine.connect().close()
    assert by_route(registry, m.ROUTE_CHECKOUTS, "ft") == {"/r": 1, m.OTHER_ROUTES: 0}
