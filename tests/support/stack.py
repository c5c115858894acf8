"""The incident's stack on real parts (issue 28), scaled to run in seconds.

The parts, each a real process or server:

- PostgreSQL: a database and a role of the test's own on the shared server; the database's
  CONNECTION LIMIT is the stack's budget (the role is no superuser, so the limit holds);
- PgBouncer 1.18 in transaction mode in front of it, as `nobody` (tests/support/pgbouncer.py);
- the incident's Flask app (tests/apps/stack_app.py) under gunicorn `-k gthread`, 2 workers
  with a thread for every user of the push, so that no request waits for a thread; its pools
  instrumented in one line, PROMETHEUS_MULTIPROC_DIR set;
- `pool-exporter sidecar` over the workers' files, with the database and PgBouncer views;
- Prometheus scraping the sidecar with the shipped rules;
- locust sending the push (tests/support/stack_load.py).

`running()` starts them and removes them all, the database and role too, however the test
ends. `Stack.burst(push)` sends a push and returns its `Outcome`; `Stack.apply()` applies a
recommendation in the shape of issue 28's `advise --json` and returns the push to send.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from pool_exporter.incident.promserver import (
    INSTALL_HINT as PROMETHEUS_HINT,
)
from pool_exporter.incident.promserver import (
    PrometheusServer,
    find_prometheus,
    free_port,
    stop_process,
)

from . import pgbouncer as pgb
from . import procs as p
from .stack_advice import Recommendation
from .stack_load import Load, Push, send
from .stack_watch import Watch

RULES = p.ROOT / "alerts" / "pool-exporter.rules.yml"
WORKERS = 2
POOL = "app"  # the pool label the app instruments under


@dataclass(frozen=True)
class Scale:
    """A push against the three layers. What decides where it queues and whether it is served
    in time is, for each layer, the work of the push against that layer's capacity over one
    pool timeout: users x hold / (connections x pool_timeout)."""

    users: int
    hold: float  # seconds of database time per request
    pool_timeout: float
    app_connections: int  # workers x (pool_size + max_overflow)
    pooler: int  # PgBouncer's default_pool_size: server connections
    budget: int  # connections the database allows the stack
    max_client_conn: int
    scrape: float  # Prometheus's scrape and evaluation interval

    def load(self, connections: int) -> float:
        """The push's work over what `connections` serve in one pool timeout."""
        return self.users * self.hold / (connections * self.pool_timeout)


# The incident (issue 28): 2,000 users at once, 0.86 s of database time each; 2 workers at
# SQLAlchemy's defaults (5 + 10, 30 s); PgBouncer's default_pool_size 40 and max_client_conn
# 3,000; max_connections 100 less 3 reserved; a scrape every 5 s.
INCIDENT = Scale(2000, 0.86, 30.0, 30, 40, 97, 3000, 5.0)
# The same stack with a fifth of the users and a fifth of the timeout (and of the scrape
# interval). The hold stays 0.86 s and every layer keeps its connections, so the work per
# timeout (users x hold / timeout, 57.3 connections) is the incident's and each layer's load
# with it: the app pools 1.91 (they time out), the pooler 1.43 (a queue moved there waits past
# the timeout), the database budget 0.59 (a pooler raised within it serves the push). The
# budget is this server's own, 97, as in the incident; max_client_conn keeps its share of the
# users (1.5 per user). A push at defaults takes about 7 s; one queued in the pooler 9 s.
SCALED = Scale(400, 0.86, 6.0, 30, 40, 97, 600, 1.0)


@dataclass(frozen=True)
class AppPools:
    """Each worker's pool."""

    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = SCALED.pool_timeout

    def env(self) -> dict[str, str]:
        return {
            "STACK_POOL_SIZE": str(self.pool_size),
            "STACK_MAX_OVERFLOW": str(self.max_overflow),
            "STACK_POOL_TIMEOUT": repr(self.pool_timeout),
        }


@dataclass(frozen=True)
class Counts:
    served: int
    timeouts: int
    errors: int

    def __sub__(self, other: Counts) -> Counts:
        return Counts(
            self.served - other.served, self.timeouts - other.timeouts, self.errors - other.errors
        )


@dataclass(frozen=True)
class Outcome:
    """One push and what every layer made of it. Times in seconds; `*_at` from the first
    request sent."""

    push: Push
    pools: AppPools
    pooler: pgb.Settings
    budget: int
    # the answers locust got: 200, 503 (the app's pool timeout), anything else
    served: int
    pool_timeouts: int
    errors: int
    slowest: float  # the longest any request took, answer complete
    first_timeout_at: float | None
    sending: float  # from the first request sent to the last
    database_peak: int  # the stack's connections to its database, sampled every 50 ms
    pooler_longest_wait: float  # PgBouncer's oldest waiting client, sampled (SHOW POOLS)
    pooler_waiting_peak: int
    app: Counts  # the app's own count (served.py)
    exporter: Counts  # the sidecar's counters: checkouts, checkout timeouts, checkout errors
    prometheus: Counts  # the same counters as Prometheus has them after the push
    alerts_at: dict[str, float]  # alertname: first seen firing
    load: Load = field(repr=False)

    def summary(self) -> str:
        pace = f"{self.push.rate:g}/s" if self.push.rate else "at once"
        alerts = ", ".join(f"{a} at {t:.1f} s" for a, t in sorted(self.alerts_at.items()))
        first = f"{self.first_timeout_at:.1f} s" if self.first_timeout_at is not None else "-"
        return (
            f"{self.push.users} users {pace} (sent over {self.sending:.2f} s, at most "
            f"{self.load.latest:.2f} s late), hold "
            f"{self.push.hold:g} s; pools {WORKERS} x ({self.pools.pool_size} + "
            f"{self.pools.max_overflow}), timeout {self.pools.pool_timeout:g} s; pooler "
            f"{self.pooler.pool_size} ({self.pooler.pool_mode}); budget {self.budget}\n"
            f"  served {self.served}, pool timeouts {self.pool_timeouts} (first at {first}), "
            f"errors {self.errors}; slowest {self.slowest:.2f} s\n"
            f"  database peak {self.database_peak}; pooler longest wait "
            f"{self.pooler_longest_wait:.2f} s, peak waiting {self.pooler_waiting_peak}\n"
            f"  app {self.app}, exporter {self.exporter}, prometheus {self.prometheus}\n"
            f"  alerts: {alerts or 'none'}"
        )


@dataclass
class Database:
    """A role and a database of the test's own, named alike, on the shared server."""

    admin_url: str  # psycopg URL of the server's `postgres` database, as a superuser
    name: str
    host: str
    port: int


@contextmanager
def database(pg_url: str, budget: int) -> Iterator[Database]:
    url = make_url(pg_url)
    admin = url.set(drivername="postgresql", database="postgres")
    made = Database(
        admin.render_as_string(hide_password=False),
        f"pool_exporter_stack_{uuid.uuid4().hex[:10]}",
        url.host or "127.0.0.1",
        url.port or 5432,
    )
    name = f'"{made.name}"'
    try:
        with psycopg.connect(made.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {name} LOGIN NOSUPERUSER")
            conn.execute(f"CREATE DATABASE {name} OWNER {name} CONNECTION LIMIT {int(budget)}")
        yield made
    finally:
        with psycopg.connect(made.admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"DROP ROLE IF EXISTS {name}")


@dataclass
class Stack:
    """The running stack; `running()` makes one."""

    tmp: Path
    procs: p.Procs
    db: Database
    bouncer: pgb.PgBouncer
    sidecar: p.Sidecar
    prometheus: PrometheusServer
    multiproc_dir: Path
    budget: int
    threads: int  # per worker
    pools: AppPools = field(default_factory=AppPools)
    app: p.Proc | None = None
    app_url: str = ""
    served_file: Path | None = None  # where the running app counts what it served
    _runs: Iterator[int] = field(default_factory=itertools.count)

    # -- the app -------------------------------------------------------------------------

    def start_app(self, pools: AppPools) -> None:
        """(Re)start gunicorn with `pools` in every worker; returns once both workers have
        instrumented their pool and the app answers."""
        self.stop_app()
        run = next(self._runs)
        self.served_file = self.tmp / f"served-{run}"
        port = free_port()
        env = {
            "PROMETHEUS_MULTIPROC_DIR": str(self.multiproc_dir),
            "APP_SERVED_FILE": str(self.served_file),
            "STACK_DATABASE_URL": (
                f"postgresql+psycopg://{self.db.name}@127.0.0.1:{self.bouncer.port}/{self.db.name}"
            ),
            "STACK_APP_NAME": self.db.name,
            **pools.env(),
        }
        args = [
            str(p.BIN / "gunicorn"), "-k", "gthread", "-w", str(WORKERS),
            "--threads", str(self.threads), "-b", f"127.0.0.1:{port}",
            "--graceful-timeout", "5", "--pythonpath", str(p.APPS), "stack_app:app",
        ]  # fmt: skip
        self.app = self.procs.start(args, env, name=f"gunicorn-{run}")
        self.app_url = f"http://127.0.0.1:{port}"
        self.pools = pools
        p.wait_until(lambda: self._workers_ready(self.app), 60, "both workers to instrument")
        p.wait_until(
            lambda: httpx.get(self.app_url + "/pid", timeout=5).status_code == 200,
            30,
            "gunicorn to answer",
        )

    def stop_app(self) -> None:
        if self.app is not None:
            stop_process(self.app.popen, 10)
            self.app = None

    def _workers_ready(self, app: p.Proc | None) -> bool:
        assert app is not None
        if app.popen.poll() is not None:
            pytest.fail(f"gunicorn exited with {app.popen.returncode}: {app.output()[-3000:]}")
        infos = p.select(self.sidecar.scrape(), "sqlalchemy_pool_info", pool=POOL)
        workers = {int(s[1]["pid"]) for s in infos} & _children(app.popen.pid)
        return len(workers) == WORKERS

    # -- a recommendation ----------------------------------------------------------------

    def apply(self, recommendation: Recommendation, push: Push) -> Push:
        """Every setting the recommendation names, applied as an operator would: PgBouncer's
        files rewritten and RELOADed, the app redeployed with its new pools. Returns `push`
        paced as recommended."""
        changes: dict[str, Any] = {}
        if recommendation.pooler_pool_size is not None:
            changes["pool_size"] = recommendation.pooler_pool_size
        if recommendation.pooler_max_client_conn is not None:
            changes["max_client_conn"] = recommendation.pooler_max_client_conn
        if changes:
            self.bouncer.reload(**changes)
        r = recommendation
        self.start_app(AppPools(r.pool_size, r.max_overflow, r.pool_timeout))
        if recommendation.push_rate is None:
            return push
        return Push(push.users, push.hold, rate=recommendation.push_rate)

    # -- a push --------------------------------------------------------------------------

    def burst(self, push: Push, timeout: float = 120.0) -> Outcome:
        app_before, exporter_before = self._app_counts(), self._exporter_counts()
        prometheus_before = self._prometheus_counts(exporter_before)
        watch = Watch(
            admin_url=self.db.admin_url,
            pooler_admin_url=self.bouncer.admin_url,
            database=self.db.name,
            user=self.db.name,
            prometheus=self.prometheus,
        )
        with watch:
            load = send(push, self.app_url, self.tmp / f"push-{next(self._runs)}", timeout)
            exporter = self._exporter_counts()
            # Watched until Prometheus has scraped the push's end: the alerts of its last
            # samples are seen too.
            prometheus = self._prometheus_counts(exporter)
        # A lost sample could hide a peak: the push's figures are only taken whole.
        if watch.peaks.failures or not watch.peaks.samples:
            raise RuntimeError(
                f"the watch lost samples ({watch.peaks.samples} taken): {watch.peaks.failures}"
            )
        requests = load.requests
        start = min(r.start for r in requests)
        timeouts = load.status(503)
        return Outcome(
            push=push,
            pools=self.pools,
            pooler=self.bouncer.settings,
            budget=self.budget,
            served=len(load.status(200)),
            pool_timeouts=len(timeouts),
            errors=len(requests) - len(load.status(200)) - len(timeouts),
            slowest=max(r.seconds for r in requests),
            first_timeout_at=(
                min(r.start + r.seconds for r in timeouts) - start if timeouts else None
            ),
            sending=max(r.start for r in requests) - start,
            database_peak=watch.peaks.database_connections,
            pooler_longest_wait=watch.peaks.pooler_longest_wait,
            pooler_waiting_peak=watch.peaks.pooler_waiting,
            app=self._app_counts() - app_before,
            exporter=exporter - exporter_before,
            prometheus=prometheus - prometheus_before,
            alerts_at={a: t - start for a, t in watch.peaks.alerts.items()},
            load=load,
        )

    def _app_counts(self) -> Counts:
        kinds = []
        if self.served_file is not None and self.served_file.exists():
            kinds = [line.split()[1] for line in self.served_file.read_text().splitlines()]
        return Counts(kinds.count("request"), kinds.count("timeout"), kinds.count("error"))

    def _exporter_counts(self) -> Counts:
        samples = self.sidecar.scrape()
        return Counts(*(int(p.total(samples, name, pool=POOL)) for name in _COUNTERS))

    def _prometheus_counts(self, want: Counts) -> Counts:
        """The counters as Prometheus has them, once it has scraped `want` (the sidecar's
        values now), or after 10 scrape intervals, whatever it has then."""

        def counts() -> Counts:
            values = []
            for name in _COUNTERS:
                found = self.prometheus.query(f'sum({name}{{pool="{POOL}"}})')
                values.append(int(float(found[0]["value"][1])) if found else -1)
            return Counts(*values)

        deadline = time.monotonic() + 10 * SCALED.scrape
        while (seen := counts()) != want and time.monotonic() < deadline:
            time.sleep(SCALED.scrape / 4)
        return seen


_COUNTERS = (
    "sqlalchemy_pool_checkouts_total",
    "sqlalchemy_pool_checkout_timeouts_total",
    "sqlalchemy_pool_checkout_errors_total",
)


def _children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (gunicorn's workers)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                # after the command's closing parenthesis: state, then the parent's pid
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.add(int(entry.name))
    return found


@contextmanager
def running(
    tmp: Path,
    procs: p.Procs,
    pg_url: str,
    *,
    pools: AppPools | None = None,
    pool_mode: str = "transaction",
    pooler_pool_size: int = SCALED.pooler,
    max_client_conn: int = SCALED.max_client_conn,
    reserve_pool_size: int = 0,
    budget: int = SCALED.budget,
    threads: int = SCALED.users,
) -> Iterator[Stack]:
    """The whole stack at the given settings (the incident's, scaled, by default), every part
    stopped and the database and role dropped when the block ends, however it ends."""
    pgb.require()
    if find_prometheus() is None:
        pytest.fail(f"prometheus is required: {PROMETHEUS_HINT}", pytrace=False)
    with ExitStack() as cleanup:
        db = cleanup.enter_context(database(pg_url, budget))
        bouncer = cleanup.enter_context(
            pgb.running(
                pool_mode=pool_mode,
                pool_size=pooler_pool_size,
                max_client_conn=max_client_conn,
                reserve_pool_size=reserve_pool_size,
                users=(db.name,),
                pg_host=db.host,
                pg_port=db.port,
            )
        )
        multiproc_dir = tmp / "multiproc"
        multiproc_dir.mkdir()
        poolers = tmp / "poolers"
        poolers.write_text(f"edge={bouncer.admin_url}\n")
        sidecar = p.start_sidecar(
            procs,
            multiproc_dir,
            f"--pgbouncer-url-file={poolers}",
            env={"POOL_EXPORTER_DATABASE_URL": db.admin_url},
        )
        prometheus = cleanup.enter_context(
            PrometheusServer(
                [sidecar.url.removeprefix("http://")], rule_files=[RULES], interval=SCALED.scrape
            )
        )
        prometheus.wait_for_scrape()
        stack = Stack(tmp, procs, db, bouncer, sidecar, prometheus, multiproc_dir, budget, threads)
        cleanup.callback(stack.stop_app)  # before PgBouncer and the database go
        stack.start_app(pools or AppPools())
        yield stack
