"""The replay's runner: each virtual user is one request in its own thread, against an
instrumented QueuePool.

A user checks a connection out, holds it for a drawn time (a client-side sleep and a trivial
query), and returns it. Users run as threads, because the pool's own waiting is what is being
measured: a caller blocked in `QueuePool` is a thread blocked in its condition variable. The
runner reads the pool's live numbers from the instrumentation's `PoolStats`, the same numbers
a scrape would show. Each request's time is split where it went: the wait for the app pool's
connection, the wait in the pooler (through one: the transaction's first statement) and the
database's time (the rest of the hold).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from time import perf_counter
from typing import Any

import sqlalchemy as sa
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import exc as sa_exc

from pool_exporter import redact
from pool_exporter.incident.percentiles import percentiles
from pool_exporter.incident.results import Layers, Result, Sample, layer
from pool_exporter.instrument import PoolInstrumentation, instrument
from pool_exporter.metrics import HOLD_BUCKETS
from pool_exporter.stats import CANCELLED, ERROR, TIMEOUT

from .scenario import PoolSettings, Scenario

# A request that got its connection; the others end with the reason the stats count.
OK = "ok"


@contextmanager
def pool_engine(
    url: str | None, settings: PoolSettings
) -> Iterator[tuple[sa.Engine, str | sa.URL]]:
    """A QueuePool engine with these settings; an SQLite file in a temporary directory when
    no URL is given."""
    if url:
        redact.split(url)  # MalformedUrl before a parser reads part of a password as a host
    with tempfile.TemporaryDirectory(prefix="pool-exporter-") as tmp:
        target: str | sa.URL = url or f"sqlite:///{Path(tmp) / 'replay.db'}"
        parsed = sa.make_url(target)
        connect_args: dict[str, Any] = {}
        if parsed.get_backend_name() == "sqlite":
            connect_args["check_same_thread"] = False  # connections move between threads
        if parsed.get_driver_name() == "psycopg":
            # psycopg 3 prepares a statement run 5 times on a connection; behind PgBouncer in
            # transaction mode the next transaction may land on a server connection that
            # never saw it. The replay's one trivial query gains nothing from preparing.
            connect_args["prepare_threshold"] = None
        engine = sa.create_engine(
            parsed,
            poolclass=sa.pool.QueuePool,
            pool_size=settings.pool_size,
            max_overflow=settings.max_overflow,
            pool_timeout=settings.pool_timeout,
            connect_args=connect_args,
        )
        try:
            probe(engine)
            yield engine, target
        finally:
            engine.dispose()


class DatabaseUnavailable(Exception):
    """The replay's database did not answer before the run started."""


def probe(engine: sa.Engine) -> None:
    """One connection and `select 1`, outside the pool under test (so its numbers start at
    zero); a database that does not answer is an error before the run, not 2,000 during it."""
    single = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
    try:
        with single.connect() as conn:
            conn.exec_driver_sql("select 1")
    except Exception as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise DatabaseUnavailable(
            f"cannot use {redact.url(engine.url)}: {type(exc).__name__}: "
            + redact.text(detail[0] if detail else "")
        ) from exc
    finally:
        single.dispose()


class Replay:
    """One run of a scenario against an instrumented engine.

    `run()` blocks until every request has finished (or `cancel()` was called) and returns
    the Result; `on_sample` is called from the sampling thread once per interval.
    """

    def __init__(
        self,
        engine: sa.Engine,
        settings: PoolSettings,
        scenario: Scenario,
        *,
        handle: PoolInstrumentation | None = None,
        registry: CollectorRegistry | None = None,
        pool_name: str = "replay",
        sample_interval: float = 1.0,
        max_threads: int = 4000,
        on_sample: Callable[[Sample, Result], None] | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.scenario = scenario
        self.handle = handle or instrument(
            engine, name=pool_name, registry=registry or CollectorRegistry()
        )
        self.stats = self.handle.stats
        self.sample_interval = sample_interval
        self.on_sample = on_sample
        self._stop = threading.Event()
        self._ended = threading.Event()
        self._sampled = 0
        # Every figure the users' threads update (the finished requests, the error counts,
        # the peaks) changes under this lock: a read-modify-write such as a max() loses
        # updates between threads without one, and free-threaded builds have no GIL that
        # would make even a list.append atomic.
        self._lock = threading.Lock()
        # (arrival offset, start, wait, hold, outcome, planned hold, wait in the pooler) per
        # finished request; the pooler's wait is part of the hold, and 0 without a pooler
        self._done: list[tuple[float, float, float, float, str, float, float]] = []
        self._error_types: dict[str, int] = {}
        self._arrived = 0
        self._t0 = 0.0
        self._saturated_at: float | None = None
        self._peak_in_use = 0
        self._max_lag = 0.0
        self._plan = scenario.arrivals()
        # Enough threads that no request waits for a thread rather than for the pool: every
        # user of the push may be inside the pool at once, plus the steady traffic.
        busy = scenario.background_rate * (settings.pool_timeout + scenario.hold.p95)
        self.threads = max(1, min(max_threads, scenario.users + math.ceil(busy) + 8))
        self.result = Result(
            database=redact.url(engine.url),
            pool=self.handle.name,
            settings=asdict(settings),
            scenario={
                **{k: v for k, v in asdict(scenario).items() if k != "hold"},
                "hold": {
                    "median": scenario.hold.median,
                    "p95": scenario.hold.p95,
                    "mean": scenario.hold.mean,
                },
            },
            started_at=time.time(),
            push_at=scenario.push_at,
            arrival_rate=scenario.users / scenario.ramp if scenario.ramp > 0 else math.inf,
        )

    def cancel(self) -> None:
        """Stop sending requests and cut the holds short; run() returns what it has so far."""
        self._stop.set()

    @property
    def elapsed(self) -> float:
        return perf_counter() - self._t0 if self._t0 else 0.0

    def run(self) -> Result:
        """Send every planned request and wait for all of them. Ctrl-C (KeyboardInterrupt in
        the calling thread) works like cancel(): the result so far comes back, interrupted."""
        self._t0 = perf_counter()
        self.result.started_at = time.time()
        self._sample_now()
        sampler = threading.Thread(target=self._sample_loop, name="replay-sampler", daemon=True)
        sampler.start()
        users = ThreadPoolExecutor(self.threads, thread_name_prefix="replay-user")
        try:
            try:
                self._dispatch(users)
            except KeyboardInterrupt:
                self._stop.set()
            try:
                users.shutdown(wait=True)
            except KeyboardInterrupt:
                # cancelled holds return at once, so the callers still queued in the pool
                # get a connection and give it back within moments
                self._stop.set()
                users.shutdown(wait=True)
        finally:
            self._ended.set()
            sampler.join()
            self._sample_now()
            self._finish()
        return self.result

    def _dispatch(self, users: ThreadPoolExecutor) -> None:
        for due, hold, _push in self._plan:
            delay = self._t0 + due - perf_counter()
            if (delay > 0 and self._stop.wait(delay)) or self._stop.is_set():
                return
            self._arrived += 1
            users.submit(self._request, due, hold)

    def _request(self, due: float, hold: float) -> None:
        start = perf_counter()
        lag = start - self._t0 - due
        try:
            conn = self.engine.connect()
        except sa_exc.TimeoutError:
            self._record(due, start, perf_counter() - start, 0.0, TIMEOUT, lag=lag)
            return
        except Exception as exc:
            self._record(due, start, perf_counter() - start, 0.0, ERROR, lag=lag, error=exc)
            return
        got = perf_counter()
        self._note_checkout(got)
        outcome = OK
        failure: Exception | None = None
        pooler = 0.0
        try:
            if self.scenario.hold_in_transaction:
                # BEGIN, rolled back at checkin: a pooler in transaction mode queues it until
                # one of its server connections is free
                conn.exec_driver_sql("select 1").close()
                if self.scenario.through_pooler:
                    pooler = perf_counter() - got
            if self._stop.wait(hold):
                outcome = CANCELLED
            conn.exec_driver_sql("select 1").close()
        except Exception as exc:
            outcome, failure = ERROR, exc
        finally:
            conn.close()
        self._record(
            due, start, got - start, perf_counter() - got, outcome,
            lag=lag, error=failure, planned=hold, pooler=pooler,
        )  # fmt: skip

    def _note_checkout(self, got: float) -> None:
        in_use = self.stats.in_use
        with self._lock:
            self._peak_in_use = max(self._peak_in_use, in_use)
            if self._saturated_at is None and in_use >= self.settings.capacity:
                self._saturated_at = got - self._t0

    def _record(
        self,
        due: float,
        start: float,
        wait: float,
        hold: float,
        outcome: str,
        *,
        lag: float,
        error: Exception | None = None,
        planned: float = 0.0,
        pooler: float = 0.0,
    ) -> None:
        with self._lock:
            self._max_lag = max(self._max_lag, lag)
            if error is not None:
                name = type(error).__name__
                self._error_types[name] = self._error_types.get(name, 0) + 1
            self._done.append((due, start - self._t0, wait, hold, outcome, planned, pooler))

    def _sample_loop(self) -> None:
        while not self._ended.wait(self._next_tick()):
            self._sample_now()

    def _next_tick(self) -> float:
        n = len(self.result.timeline)  # the first sample is at t = 0
        return max(0.0, self._t0 + n * self.sample_interval - perf_counter())

    def _sample_now(self) -> None:
        with self._lock:
            s = self.stats
            done = self._done
            start = self._sampled
            self._sampled = len(done)
            waits = [d[2] for d in done[start : self._sampled]]
            p = percentiles(waits)
            sample = Sample(
                t=round(self.elapsed, 3),
                in_use=s.in_use,
                idle=s.idle,
                waiting=s.waiting,
                capacity=self.settings.capacity,
                checkouts=s.checkouts,
                timeouts=s.timeouts,
                arrived=self._arrived,
                finished=self._sampled,
                wait_p50=round(p.get("p50", 0.0), 4),
                wait_p95=round(p.get("p95", 0.0), 4),
                wait_p99=round(p.get("p99", 0.0), 4),
                wait_max=round(p.get("max", 0.0), 4),
            )
            self.result.timeline.append(sample)
            self.result.peak_waiting = max(self.result.peak_waiting, s.waiting)
        if self.on_sample is not None:
            self.on_sample(sample, self.result)

    def _finish(self) -> None:
        r = self.result
        with self._lock:
            done = list(self._done)
        r.elapsed = round(self.elapsed, 3)
        r.interrupted = self._stop.is_set()
        r.requests = len(done)
        r.not_started = len(self._plan) - self._arrived
        r.ok = sum(1 for d in done if d[4] == OK)
        r.timeouts = sum(1 for d in done if d[4] == TIMEOUT)
        r.errors = sum(1 for d in done if d[4] == ERROR)
        r.cancelled = sum(1 for d in done if d[4] == CANCELLED)
        r.error_types = dict(self._error_types)
        push = self.scenario.push_at
        if self._saturated_at is not None:
            r.time_to_saturation = round(self._saturated_at - push, 3)
        timeout_times = [d[1] + d[2] for d in done if d[4] == TIMEOUT]
        if timeout_times:
            r.first_timeout = round(min(timeout_times) - push, 3)
        ok_waits = [d[2] for d in done if d[4] != TIMEOUT and d[4] != ERROR]
        r.longest_wait = round(max(ok_waits, default=0.0), 4)
        r.wait = {k: round(v, 4) for k, v in percentiles([d[2] for d in done]).items()}
        holds = [d[3] for d in done if d[4] == OK]
        r.hold = {k: round(v, 4) for k, v in percentiles(holds).items()}
        if holds:
            r.hold_overhead = round(statistics.fmean(d[3] - d[5] for d in done if d[4] == OK), 5)
        r.hold_buckets = [[le, sum(1 for h in holds if h <= le)] for le in HOLD_BUCKETS]
        r.layers = self._layers([d for d in done if d[4] == OK])
        r.peak_in_use = max(self._peak_in_use, *(s.in_use for s in r.timeline), 0)
        r.max_start_lag = round(self._max_lag, 4)

    def _layers(self, ok: list[tuple[float, float, float, float, str, float, float]]) -> Layers:
        """Where the successful requests' time went, per layer; the pooler's only through one."""
        if not ok:
            return {}
        parts = {"pool": [d[2] for d in ok]}
        if self.scenario.through_pooler:
            parts["pooler"] = [d[6] for d in ok]
        parts["database"] = [d[3] - d[6] for d in ok]
        return {name: layer(times) for name, times in parts.items()}


def replay(
    scenario: Scenario,
    settings: PoolSettings,
    *,
    database_url: str | None = None,
    registry: CollectorRegistry | None = None,
    pool_name: str = "replay",
    sample_interval: float = 1.0,
    on_sample: Callable[[Sample, Result], None] | None = None,
) -> Result:
    """Run `scenario` against a fresh instrumented pool; the whole burst, start to finish."""
    with pool_engine(database_url, settings) as (engine, _url):
        runner = Replay(
            engine,
            settings,
            scenario,
            registry=registry,
            pool_name=pool_name,
            sample_interval=sample_interval,
            on_sample=on_sample,
        )
        try:
            return runner.run()
        finally:
            runner.handle.uninstrument()
