"""Who holds the connections, in multiprocess mode: gunicorn workers counting checkouts by
route into their stats files, the sidecar summing them by route, capped at max_routes."""

from __future__ import annotations

import itertools
import os
import signal
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest

import pool_exporter
from pool_exporter import metrics as m
from pool_exporter.multiprocess import archive, layout
from pool_exporter.multiprocess.files import BadFiles
from pool_exporter.multiprocess.reader import WorkersCollector
from pool_exporter.multiprocess.routestore import LockedStoredRoutes
from pool_exporter.multiprocess.store import MultiprocessPoolStats

from .support.forking import in_child
from .support.procs import (
    BIN,
    ROOT,
    Procs,
    Samples,
    free_port,
    parse,
    procs,
    select,
    start_sidecar,
    total,
    wait_until,
)

__all__ = ["procs"]

WORKERS = 2


def start_gunicorn(procs: Procs, tmp_path: Path, max_routes: int) -> tuple[str, Path]:
    """gunicorn with WORKERS sync workers of tests/apps/route_app.py, preloaded (the master
    instruments the engine too); its base URL and multiprocess directory."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    port = free_port()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "APP_DATABASE_URL": f"sqlite:///{tmp_path}/app.db",
        "APP_MAX_ROUTES": str(max_routes),
    }
    args = [str(BIN / "gunicorn"), "--preload", "-w", str(WORKERS), "-k", "sync"]
    args += ["-b", f"127.0.0.1:{port}", "--pythonpath", str(ROOT / "tests" / "apps")]
    procs.start([*args, "route_app:app"], env, name="gunicorn")
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/pid").status_code == 200, 20, "gunicorn to serve")
    return url, directory


ROUTE_CHECKOUTS, ROUTE_WAITED = m.ROUTE_CHECKOUTS, m.ROUTE_WAITED


def by_route(samples: Samples, metric: m.Metric, pool: str = "app") -> dict[str, float]:
    return {s[1]["route"]: s[2] for s in select(samples, metric.sample, pool=pool)}


def get_all(base: str, paths: list[str]) -> set[int]:
    """Every path requested, eight at a time; the pids of the workers that served them."""
    with httpx.Client(timeout=20) as client, ThreadPoolExecutor(8) as pool:
        return {int(client.get(base + p).text) for p in pool.map(lambda p: p, paths)}


@pytest.mark.slow
def test_gunicorn_workers_route_totals_equal_what_the_test_sent(
    procs: Procs, tmp_path: Path
) -> None:
    base, directory = start_gunicorn(procs, tmp_path, max_routes=20)
    sidecar = start_sidecar(procs, directory)
    served = get_all(base, [f"/orders/{n}" for n in range(40)] + ["/pid"] * 5)
    after = sidecar.scrape()
    assert by_route(after, m.ROUTE_CHECKOUTS) == {"/orders/{id}": 40, m.OTHER_ROUTES: 0}
    assert total(after, "sqlalchemy_pool_checkouts_total", pool="app") == 40
    seconds = by_route(after, m.ROUTE_HOLD)
    hold_sum = total(after, "sqlalchemy_pool_connection_hold_seconds_sum", pool="app")
    assert sum(seconds.values()) == pytest.approx(hold_sum) and seconds["/orders/{id}"] > 0
    waited = total(after, "sqlalchemy_pool_waited_checkouts_total", pool="app")
    assert sum(by_route(after, m.ROUTE_WAITED).values()) == waited
    # A worker killed: its file is folded into the archive, by route, and nothing is lost.
    os.kill(served.pop(), signal.SIGKILL)
    folded = wait_until(
        lambda: (
            (s := sidecar.scrape())
            and total(s, "pool_exporter_multiprocess_dead_workers_total") >= 1
            and s
        ),
        20,
        "the killed worker to be folded",
    )
    assert by_route(folded, m.ROUTE_CHECKOUTS) == {"/orders/{id}": 40, m.OTHER_ROUTES: 0}
    assert by_route(folded, m.ROUTE_HOLD) == pytest.approx(seconds)


@pytest.mark.slow
def test_50_distinct_routes_across_gunicorn_workers_give_at_most_max_routes_plus_one_series(
    procs: Procs, tmp_path: Path
) -> None:
    base, directory = start_gunicorn(procs, tmp_path, max_routes=5)
    sidecar = start_sidecar(procs, directory)
    paths = [f"/item/{n}" for n in range(50) for _ in range(1 + n % 3)]
    served = get_all(base, paths)
    assert len(served) == WORKERS, "both workers served: each keeps routes of its own"
    scrapes = [sidecar.scrape() for _ in range(3)]
    for samples in scrapes:
        for metric in m.ROUTES:
            series = by_route(samples, metric)
            assert len(series) <= 5 + 1 and m.OTHER_ROUTES in series, metric.name
        routes = by_route(samples, m.ROUTE_CHECKOUTS)
        assert sum(routes.values()) == len(paths)
        assert total(samples, "sqlalchemy_pool_checkouts_total", pool="app") == len(paths)
    # No served series went down from one scrape to the next.
    for before, after in itertools.pairwise(scrapes):
        old, new = by_route(before, m.ROUTE_HOLD), by_route(after, m.ROUTE_HOLD)
        assert all(new[r] >= old[r] for r in old if r in new)


# -- in this process, with PROMETHEUS_MULTIPROC_DIR set: the files and the reader ----------


def read(directory: Path) -> Samples:
    """Everything a sidecar on `directory` would serve now (its reader, in this process)."""
    registry = CollectorRegistry()
    registry.register(WorkersCollector(str(directory)))
    return parse(generate_latest(registry).decode())


@pytest.fixture
def multiproc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """This process in multiprocess mode, writing into the directory returned."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(directory))
    yield directory


def test_a_workers_settings_are_served_with_its_gauges(multiproc: Path, tmp_path: Path) -> None:
    engine = sa.create_engine(
        f"sqlite:///{tmp_path}/s.db", pool_recycle=45, isolation_level="READ UNCOMMITTED"
    )
    handle = pool_exporter.instrument(engine, name="set")
    try:
        engine.connect().close()
        samples = read(multiproc)
        (recycle,) = select(samples, m.RECYCLE.name, pool="set")
        assert recycle[2] == 45 and "worker" in recycle[1]
        (info,) = select(samples, m.INFO.sample, pool="set")
        assert info[1]["isolation_level"] == "READ UNCOMMITTED"
        assert (info[1]["pre_ping"], info[1]["use_lifo"]) == ("false", "false")
        (opening,) = select(samples, m.OPENING.name, pool="set")
        assert opening[2] == 0
    finally:
        handle.uninstrument()
        engine.dispose()


def test_a_forked_worker_stores_its_own_routes_and_leaves_its_parents(
    multiproc: Path, tmp_path: Path
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/f.db")
    route = ["/parent"]
    handle = pool_exporter.instrument(engine, name="f", route=lambda: route[0])
    try:
        for _ in range(3):  # the first opens the connection: a waited checkout
            engine.connect().close()

        def child() -> object:
            route[0] = "/child"
            for _ in range(2):  # the parent's idle connection: none waited
                engine.connect().close()
            samples = read(multiproc)
            return [by_route(samples, metric, "f") for metric in (ROUTE_CHECKOUTS, ROUTE_WAITED)]

        # parent and child both live then: their files summed, each counted once, and
        # nothing of the parent's in the child's file
        checkouts, waited = in_child(child)
        assert checkouts == {"/parent": 3, "/child": 2, m.OTHER_ROUTES: 0}
        assert waited == {"/parent": 1, "/child": 0, m.OTHER_ROUTES: 0}
        assert handle.routes is not None and handle.routes.counts["/parent"].checkouts == 3
    finally:
        handle.uninstrument()
        engine.dispose()


def test_a_route_name_that_is_not_whole_is_counted_without_it(
    multiproc: Path, tmp_path: Path
) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path}/n.db")
    names = iter(["/a", "/b", "/b"])
    handle = pool_exporter.instrument(engine, name="n", route=lambda: next(names))
    try:
        for _ in range(3):
            engine.connect().close()
        stats = handle.stats
        assert isinstance(stats, MultiprocessPoolStats) and handle.routes is not None
        # As a reader could meet a name being written: a length past the name's room.
        entry = handle.routes.counts["/a"].at - layout.ENTRY_VALUES
        stats._ints[entry + layout.ENTRY_LENGTH] = 8 * layout.NAME_SLOTS + 1
        found = by_route(read(multiproc), m.ROUTE_CHECKOUTS, "n")
        assert found == {"/b": 2, m.OTHER_ROUTES: 1}
    finally:
        handle.uninstrument()
        engine.dispose()


def test_the_archive_keeps_the_served_routes_by_name_and_bounds_the_rest() -> None:
    slots: list[float] = [0] * layout.SLOTS  # counts are ints, as a reader reads them
    many = {f"/r{n}": (1, float(n), 0) for n in range(archive.ROUTES_KEPT + 30)}
    served = {"/r0", "/r1"}  # the least busy, but served now: they must stay by name
    dead: dict[str, archive.Dead] = {"w1.stats": ("p", slots, (many, (2, 1.0, 0)), 5)}
    folded = archive.folded(archive.Archive(), dead, {"w1.stats"}, {"p": served})
    named, rest = folded.routes["p"]
    assert len(named) == archive.ROUTES_KEPT and served <= set(named)
    assert sum(t[0] for t in named.values()) + rest[0] == len(many) + 2
    assert folded.route_limits == {"p": 5}


def test_the_archives_routes_are_written_and_read_back(tmp_path: Path) -> None:
    slots: list[float] = [0] * layout.SLOTS  # counts are ints, as a reader reads them
    routes = ({"/orders/{id}": (3, 0.5, 1), "ü/päth": (1, 0.25, 0)}, (2, 1.0, 1))
    dead: dict[str, archive.Dead] = {"w1.stats": ("p", slots, routes, 20)}
    written = archive.folded(archive.Archive(), dead, {"w1.stats"})
    with archive.locked(str(tmp_path)):
        archive.write(str(tmp_path), written)
    again = archive.Reader(str(tmp_path)).load(BadFiles())
    assert again.sound and again.routes == {"p": routes} and again.route_limits == {"p": 20}


def test_a_free_threaded_worker_gets_the_locked_stored_variant(
    multiproc: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False, raising=False)
    engine = sa.create_engine(f"sqlite:///{tmp_path}/ft.db")
    handle = pool_exporter.instrument(engine, name="ft", route=lambda: "/r")
    try:
        assert isinstance(handle.routes, LockedStoredRoutes)
        engine.connect().close()
        found = by_route(read(multiproc), m.ROUTE_CHECKOUTS, "ft")
        assert found == {"/r": 1, m.OTHER_ROUTES: 0}
    finally:
        handle.uninstrument()
        engine.dispose()
