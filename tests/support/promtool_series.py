"""The building blocks of the alert rules' promtool tests: synthetic series of what an
instrumented pool, the sidecar and a pooler would report, written in promtool's expanding
notation, and the test documents promtool reads."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pool_exporter import metrics as m
from pool_exporter.mixin.config import MixinConfig

# Settings that change what an alert says or where it goes, not when it fires: the cases
# hold whatever their values (`Presented` carries them into what promtool expects).
PRESENTATION = (
    "severity_page",
    "severity_warning",
    "severity_ticket",
    "runbook_url",
    "prometheusrule_name",
)
# The default runbook page, written out rather than imported from the config under test.
RUNBOOKS = "https://github.com/pool-exporter/pool-exporter/blob/main/docs/runbooks.md"

# -- synthetic series: what an instrumented pool and the sidecar would report ----------------

JOB, INSTANCE, POOL = "app", "web-1:8000", "main"
SIDECAR = "web-1:9187"
BASE = {"job": JOB, "instance": INSTANCE, "pool": POOL}
# Counters start high: rate() extrapolates toward zero for a counter near 0, and a bucket of
# the same histogram starting elsewhere would then be extrapolated differently.
COUNTER_START = 1_000_000.0

Value = float | None  # None: the series is gone (a staleness marker)
Fn = Callable[[int], Value]


def labels(**extra: str) -> dict[str, str]:
    return {**BASE, **extra}


def series_name(name: str, lbls: dict[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(lbls.items()))
    return f"{name}{{{inner}}}"


def number(v: float) -> str:
    text = repr(float(v))
    return text.removesuffix(".0")


def _step(values: Sequence[Value], j: int) -> float | None:
    """values[j + 1] - values[j]; None past the end or where a series is gone."""
    if j + 1 >= len(values) or (a := values[j]) is None or (b := values[j + 1]) is None:
        return None
    return b - a


def expanding(values: Sequence[Value]) -> str:
    """Values in promtool's expanding notation: `a+bxn` for n+1 values growing by b each,
    `stale` where a series ends and `_xn` for the n samples it stays gone."""
    out: list[str] = []
    i = 0
    while i < len(values):
        v, end = values[i], i + 1  # end: one past the run that starts at i
        if v is None:
            while end < len(values) and values[end] is None:
                end += 1
            gone = end - i - 1
            out.append("stale" + ("" if not gone else " _" if gone == 1 else f" _x{gone}"))
        else:
            step = _step(values, i)
            while step is not None and _step(values, end - 1) == step:
                end += 1
            if step is not None and end - i >= 3:
                sign = "-" if step < 0 else "+"
                out.append(f"{number(v)}{sign}{number(abs(step))}x{end - i - 1}")
            else:
                out.append(number(v))
                end = i + 1
        i = end
    return " ".join(out)


@dataclass
class Series:
    """Input series of one promtool test: gauges from a function of the sample index,
    counters from their increase per interval."""

    interval: int  # seconds
    samples: int
    found: list[dict[str, str]] = field(default_factory=list)
    # Labels every series carries besides its own, e.g. the cluster a scrape config adds.
    common: dict[str, str] = field(default_factory=dict)

    def gauge(self, name: str, lbls: dict[str, str], fn: Fn) -> None:
        self._add(name, lbls, [fn(k) for k in range(self.samples)])

    def counter(self, name: str, lbls: dict[str, str], increase: Callable[[int], float]) -> None:
        total, values = COUNTER_START, []
        for k in range(self.samples):
            total += increase(k) if k else 0.0
            values.append(total)
        self._add(name, lbls, values)

    def histogram(
        self, metric: m.Metric, lbls: dict[str, str], observed: Callable[[int], dict[float, float]]
    ) -> None:
        """`observed(k)`: {value: count} observed in the interval ending at sample k."""

        def at_most(bound: float) -> Callable[[int], float]:
            return lambda k: sum(n for v, n in observed(k).items() if v <= bound)

        for bound in [*metric.buckets, math.inf]:
            le = "+Inf" if bound == math.inf else f"{bound:g}"
            self.counter(metric.name + "_bucket", {**lbls, "le": le}, at_most(bound))
        self.counter(metric.name + "_count", lbls, lambda k: sum(observed(k).values()))
        self.counter(
            metric.name + "_sum", lbls, lambda k: sum(v * n for v, n in observed(k).items())
        )

    def _add(self, name: str, lbls: dict[str, str], values: Sequence[Value]) -> None:
        found = {"series": series_name(name, {**self.common, **lbls}), "values": expanding(values)}
        self.found.append(found)


def one(k: int) -> float:
    return 1.0


@dataclass(frozen=True)
class Pool:
    """One pool of 15 connections (5 + 10), pool timeout 30 s, in the worker slots
    `workers`.

    Functions of the sample index give in use and waiting (every worker alike), the
    checkouts served per second with their hold and wait times, timeouts per interval (each
    having waited the whole pool timeout) and overflow connections closed per interval.
    """

    in_use: Fn
    waiting: Fn = lambda k: 0.0
    served: Callable[[int], float] = lambda k: 70.0  # per second
    hold: float = 0.15
    wait: Callable[[int], float] = lambda k: 0.001
    timeouts: Callable[[int], float] = lambda k: 0.0
    connects: Callable[[int], float] = lambda k: 1.0
    connect_errors: Callable[[int], float] = lambda k: 0.0
    invalidations: Callable[[int], float] = lambda k: 0.0  # hard ones, per interval
    oldest: Fn = lambda k: 0.02  # the oldest checkout's age, seconds
    long_checkouts: Callable[[int], float] = lambda k: 0.0
    gc_returned: Callable[[int], float] = lambda k: 0.0
    overflow_closes: Callable[[int], float] = lambda k: 0.0
    workers: tuple[str, ...] = ("0",)
    capacity: float = 15.0
    max_overflow: float = 10.0
    timeout: float = 30.0

    def add(self, s: Series) -> None:
        for slot in self.workers:
            worker = labels(**{m.WORKER_LABEL: slot})
            s.gauge(m.CONNECTIONS.name, {**worker, "state": "in_use"}, self.in_use)
            s.gauge(m.WAITING.name, worker, self.waiting)
            s.gauge(m.MAX_CONNECTIONS.name, worker, lambda k: self.capacity)
            s.gauge(m.MAX_OVERFLOW.name, worker, lambda k: self.max_overflow)
            s.gauge(m.TIMEOUT.name, worker, lambda k: self.timeout)
            s.gauge(m.OLDEST_CHECKOUT.name, worker, self.oldest)
        n = len(self.workers)

        def per_interval(k: int) -> float:
            return self.served(k) * s.interval * n

        s.histogram(m.HOLD, labels(), lambda k: {self.hold: per_interval(k)})
        s.histogram(
            m.CHECKOUT_WAIT,
            labels(outcome="success"),
            lambda k: {self.wait(k): per_interval(k)},
        )
        s.histogram(
            m.CHECKOUT_WAIT,
            labels(outcome="timeout"),
            lambda k: {self.timeout: self.timeouts(k)},
        )
        s.counter(m.CLOSES.sample, labels(reason="overflow"), self.overflow_closes)
        s.counter(m.CHECKOUT_TIMEOUTS.sample, labels(), self.timeouts)
        s.counter(m.CONNECTS.sample, labels(), self.connects)
        s.counter(m.CONNECT_ERRORS.sample, labels(), self.connect_errors)
        s.counter(m.INVALIDATIONS.sample, labels(soft="false"), self.invalidations)
        s.counter(m.INVALIDATIONS.sample, labels(soft="true"), lambda k: 0.0)
        s.counter(m.LONG_CHECKOUTS.sample, labels(), self.long_checkouts)
        s.counter(m.GC_RETURNED.sample, labels(), self.gc_returned)
        s.gauge(
            m.INFO.sample, labels(pool_class="QueuePool", dialect="sqlite", driver="pysqlite"), one
        )
        s.gauge("up", {"job": JOB, "instance": INSTANCE}, one)


def database(s: Series, used: Fn, up: Fn = one, max_connections: float = 103.0) -> None:
    """The sidecar's view: 3 reserved slots, so 100 for ordinary roles; `used` of them by
    client connections, split 3:1 between active and idle."""
    sidecar = {"job": JOB, "instance": SIDECAR}
    s.gauge(m.DATABASE_MAX_CONNECTIONS.name, sidecar, lambda k: max_connections)
    s.gauge(m.DATABASE_RESERVED_CONNECTIONS.name, sidecar, lambda k: 3.0)
    s.gauge(m.DATABASE_UP.name, sidecar, up)

    def part(share: float) -> Fn:
        return lambda k: None if (u := used(k)) is None else u * share

    for state, share in (("active", 0.75), ("idle", 0.25)):
        s.gauge(
            m.DATABASE_CONNECTIONS.name,
            {**sidecar, "database": "shop", "state": state, "application_name": "web"},
            part(share),
        )


def stuck(
    s: Series,
    *,
    idle: Fn = lambda k: 0.5,
    role_connections: Fn = lambda k: 20.0,
    database_limit: float = 100.0,
) -> None:
    """What the sidecar sees the database stuck on: application web on database shop with a
    session idle in a transaction for `idle` seconds (its oldest transaction 2 s older); role
    web holding `role_connections` of its CONNECTION LIMIT of 50, role postgres 3 connections
    and no limit; database shop's CONNECTION LIMIT."""
    sidecar = {"job": JOB, "instance": SIDECAR}
    application = {**sidecar, "database": "shop", "application_name": "web"}
    s.gauge(m.DATABASE_OLDEST_IDLE_IN_TRANSACTION.name, application, idle)
    oldest: Fn = lambda k: None if (i := idle(k)) is None else i + 2.0  # noqa: E731
    s.gauge(m.DATABASE_OLDEST_TRANSACTION.name, application, oldest)
    s.gauge(m.DATABASE_ROLE_CONNECTIONS.name, {**sidecar, "role": "web"}, role_connections)
    s.gauge(m.DATABASE_ROLE_CONNECTION_LIMIT.name, {**sidecar, "role": "web"}, lambda k: 50.0)
    s.gauge(m.DATABASE_ROLE_CONNECTIONS.name, {**sidecar, "role": "postgres"}, lambda k: 3.0)
    s.gauge(
        m.DATABASE_CONNECTION_LIMIT.name, {**sidecar, "database": "shop"}, lambda k: database_limit
    )


def between(start: float, end: float, inside: Value, outside: Value, interval: int = 15) -> Fn:
    """A value `inside` [start, end) seconds, `outside` elsewhere."""
    return lambda k: inside if start <= k * interval < end else outside


POOLER = {"job": JOB, "instance": SIDECAR, "pooler": "edge"}
POOLER_POOL = {**POOLER, "database": "shop", "user": "web"}
POOLER_WHERE = "pooler edge (shop/web)"


def pooler(
    s: Series,
    *,
    waiting: Fn = lambda k: 0.0,
    maxwait: Fn = lambda k: 0.0,
    active: Fn = lambda k: 8.0,
    used_clients: Fn = lambda k: 30.0,
    pool_mode: str = "transaction",
) -> None:
    """The sidecar's PgBouncer view: one pool of 20 server connections (shop/web), `active`
    of them busy and the rest idle, max_client_conn 100."""
    s.gauge(m.PGBOUNCER_CLIENTS.name, {**POOLER_POOL, "state": "waiting"}, waiting)
    s.gauge(m.PGBOUNCER_CLIENTS.name, {**POOLER_POOL, "state": "active"}, lambda k: 30.0)
    s.gauge(m.PGBOUNCER_SERVERS.name, {**POOLER_POOL, "state": "active"}, active)
    idle: Fn = lambda k: None if (a := active(k)) is None else 20.0 - a  # noqa: E731
    s.gauge(m.PGBOUNCER_SERVERS.name, {**POOLER_POOL, "state": "idle"}, idle)
    s.gauge(m.PGBOUNCER_MAXWAIT.name, POOLER_POOL, maxwait)
    s.gauge(m.PGBOUNCER_DB_POOL_SIZE.name, {**POOLER, "database": "shop"}, lambda k: 20.0)
    s.gauge(m.PGBOUNCER_MAX_CLIENT_CONN.name, POOLER, lambda k: 100.0)
    s.gauge(m.PGBOUNCER_LIST_ITEMS.name, {**POOLER, "list": "used_clients"}, used_clients)
    s.gauge(
        m.PGBOUNCER_DB_INFO.sample,
        {**POOLER, "database": "shop", "pool_mode": pool_mode},
        one,
    )


# -- what promtool is told to expect ----------------------------------------------------------

Expected = dict[str, dict[str, str]]


@dataclass(frozen=True)
class Presented:
    """A config's severities and runbook page in place of the defaults the cases are written
    with: the cases hold for a config that changes only these."""

    severities: dict[str, str]
    runbook_url: str

    @classmethod
    def of(cls, cfg: MixinConfig) -> Presented:
        return cls(
            {
                "critical": cfg.severity_page,
                "warning": cfg.severity_warning,
                "info": cfg.severity_ticket,
            },
            cfg.runbook_url,
        )

    def severity(self, written: str) -> str:
        return self.severities.get(written, written)

    def runbook(self, written: str) -> str:
        page, _, anchor = written.partition("#")
        return f"{self.runbook_url}#{anchor}" if page == RUNBOOKS else written


@dataclass(frozen=True)
class UnitTest:
    """One promtool test: series, and (eval seconds, alertname, the alerts firing then)."""

    name: str
    series: Series
    checks: list[tuple[int, str, list[Expected]]]

    def document(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "interval": f"{self.series.interval}s",
            "input_series": self.series.found,
            "alert_rule_test": [
                {"eval_time": f"{t}s", "alertname": a, "exp_alerts": exp}
                for t, a, exp in self.checks
            ],
        }


@dataclass(frozen=True)
class Case:
    """One alert's life in series: not yet firing at `before` (its `for` not yet run out, or
    the trouble not yet there), firing at `firing` with exactly the labels and annotations
    written here, resolved at `resolved`. Nothing expected is read from the rule under test,
    so a rule that says or routes the wrong thing fails promtool."""

    alert: str
    series: Callable[[], Series]
    severity: str
    summary: str
    runbook_url: str
    before: int
    firing: int
    labels: dict[str, str]  # besides severity
    description: str
    resolved: int

    def expected(self, shown: Presented, lbls: dict[str, str], description: str) -> Expected:
        """The alert as promtool reports it firing with `lbls` and `description`."""
        return {
            "exp_labels": {**lbls, "severity": shown.severity(self.severity)},
            "exp_annotations": {
                "summary": self.summary,
                "description": description,
                "runbook_url": shown.runbook(self.runbook_url),
            },
        }

    def unit_test(self, shown: Presented) -> UnitTest:
        firing = self.expected(shown, self.labels, self.description)
        checks = [
            (self.before, self.alert, []),
            (self.firing, self.alert, [firing]),
            (self.resolved, self.alert, []),
        ]
        return UnitTest(
            f"{self.alert}: not yet at {self.before}s, firing at {self.firing}s, "
            f"resolved at {self.resolved}s",
            self.series(),
            checks,
        )
