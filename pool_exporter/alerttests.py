"""The alert rules' promtool unit tests, written as promtool test files: synthetic pool and
database series, a case per alert, steady load and the incident's burst.

`pool-exporter alerts generate` writes them to `alerts/tests/` beside the rules;
`promtool test rules alerts/tests/*.test.yml` runs them. promtool takes one evaluation
interval per file, so there is one file per interval.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import metrics as m
from .alertconfig import AlertConfig
from .alertrules import Rule, alert_rules, groups

TESTS_DIR = "tests"  # beside the rules

# Settings that change what an alert says or where it goes, not when it fires: the cases
# hold whatever their values.
PRESENTATION = (
    "severity_page",
    "severity_warning",
    "severity_ticket",
    "runbook_url",
    "prometheusrule_name",
)

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
        self.found.append({"series": series_name(name, lbls), "values": expanding(values)})


def one(k: int) -> float:
    return 1.0


def info() -> str:
    return m.INFO.name + "_info"


@dataclass(frozen=True)
class Pool:
    """One pool of 15 connections (5 + 10), pool timeout 30 s, in the workers `pids`.

    Functions of the sample index give in use and waiting (every worker alike), the
    checkouts served per second with their hold and wait times, and timeouts per interval.
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
    pids: tuple[str, ...] = ("101",)
    capacity: float = 15.0
    timeout: float = 30.0

    def add(self, s: Series) -> None:
        for pid in self.pids:
            worker = labels(pid=pid)
            s.gauge(m.CONNECTIONS.name, {**worker, "state": "in_use"}, self.in_use)
            s.gauge(m.WAITING.name, worker, self.waiting)
            s.gauge(m.MAX_CONNECTIONS.name, worker, lambda k: self.capacity)
            s.gauge(m.TIMEOUT.name, worker, lambda k: self.timeout)
        n = len(self.pids)

        def per_interval(k: int) -> float:
            return self.served(k) * s.interval * n

        s.histogram(m.HOLD, labels(), lambda k: {self.hold: per_interval(k)})
        s.histogram(m.CHECKOUT_WAIT, labels(), lambda k: {self.wait(k): per_interval(k)})
        s.counter(m.CHECKOUT_TIMEOUTS.sample, labels(), self.timeouts)
        s.counter(m.CONNECTS.sample, labels(), self.connects)
        s.counter(m.CONNECT_ERRORS.sample, labels(), self.connect_errors)
        s.counter(m.INVALIDATIONS.sample, labels(soft="false"), self.invalidations)
        s.counter(m.INVALIDATIONS.sample, labels(soft="true"), lambda k: 0.0)
        s.gauge(info(), labels(pool_class="QueuePool", dialect="sqlite", driver="pysqlite"), one)
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


def between(start: float, end: float, inside: Value, outside: Value, interval: int = 15) -> Fn:
    """A value `inside` [start, end) seconds, `outside` elsewhere."""
    return lambda k: inside if start <= k * interval < end else outside


# -- what promtool is told to expect ----------------------------------------------------------

Expected = dict[str, dict[str, str]]


def expected(rule: Rule, lbls: dict[str, str], description: str) -> Expected:
    """An alert as promtool reports it: the rule's labels and its rendered annotations."""
    return {
        "exp_labels": {**lbls, **rule["labels"]},
        "exp_annotations": {
            "summary": rule["annotations"]["summary"],
            "description": description,
            "runbook_url": rule["annotations"]["runbook_url"],
        },
    }


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


# -- one case per alert: not yet, firing with exact labels and annotations, resolved ----------


@dataclass(frozen=True)
class Case:
    """One alert's life in series: not yet firing at `before` (its `for` not yet run out, or
    the trouble not yet there), firing at `firing` with the labels and description given,
    resolved at `resolved`."""

    alert: str
    series: Callable[[], Series]
    before: int
    firing: int
    labels: dict[str, str]
    description: str
    resolved: int

    def unit_test(self, rules: dict[str, Rule]) -> UnitTest:
        firing = expected(rules[self.alert], self.labels, self.description)
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


def pool_case(pool: Pool, seconds: int, interval: int = 15) -> Callable[[], Series]:
    def build() -> Series:
        s = Series(interval, seconds // interval + 1)
        pool.add(s)
        database(s, lambda k: 50.0)
        return s

    return build


STEADY = 10.5  # 70 % of 15
WORKER = labels(pid="101")
WHERE = "pool main on web-1:8000 (worker 101)"


def queued(waiting: float) -> Callable[[], Series]:
    """The pool full with `waiting` callers from 300 s to 600 s, at 70 % before and after."""
    return pool_case(
        Pool(in_use=between(300, 600, 15, STEADY), waiting=between(300, 600, waiting, 0)), 900
    )


def connect_errors() -> Series:
    """10 connections opened per interval; from 300 s to 600 s none, and 30 attempts fail."""
    s = Series(15, 1201 // 15 + 1)
    failing = between(300, 615, 30.0, 0.0)
    Pool(
        in_use=lambda k: STEADY,
        connects=lambda k: 0.0 if failing(k) else 10.0,
        connect_errors=lambda k: failing(k) or 0.0,
    ).add(s)
    return s


def invalidations() -> Series:
    """Two workers of 15: 18 invalidations at 600 s are 60 % of the instance's 30."""
    s = Series(15, 81)
    Pool(
        in_use=lambda k: STEADY,
        pids=("101", "102"),
        invalidations=lambda k: 18.0 if k * 15 == 600 else 0.0,
    ).add(s)
    return s


def fleet() -> Series:
    """Four workers of 15 (60 of the database's 100), eight from 300 s to 1500 s (120)."""
    s = Series(15, 1801 // 15 + 1)
    Pool(in_use=lambda k: STEADY, pids=("101", "102", "103", "104")).add(s)
    for pid in ("201", "202", "203", "204"):
        s.gauge(m.MAX_CONNECTIONS.name, labels(pid=pid), between(300, 1500, 15.0, None))
    database(s, lambda k: 50.0)
    return s


def database_busy() -> Series:
    """97 of the 100 slots in use from 300 s to 900 s."""
    s = Series(15, 1201 // 15 + 1)
    Pool(in_use=lambda k: STEADY).add(s)
    database(s, between(300, 900, 97.0, 50.0))
    return s


def database_down() -> Series:
    s = Series(15, 601 // 15 + 1)
    Pool(in_use=lambda k: STEADY).add(s)
    database(s, lambda k: 50.0, up=between(300, 450, 0.0, 1.0))
    return s


def metrics_absent() -> Series:
    """web-1 keeps answering scrapes without pool metrics from 300 s to 1500 s; web-2 is
    removed from service discovery at 300 s and must stay quiet."""
    s = Series(15, 1801 // 15 + 1)
    info_labels = labels(pool_class="QueuePool", dialect="sqlite", driver="pysqlite")
    s.gauge(info(), info_labels, between(300, 1500, None, 1.0))
    s.gauge("up", {"job": JOB, "instance": INSTANCE}, one)
    s.gauge(info(), {**info_labels, "instance": "web-2:8000"}, between(0, 300, 1.0, None))
    s.gauge("up", {"job": JOB, "instance": "web-2:8000"}, between(0, 300, 1.0, None))
    return s


DB = {"job": JOB}
CASES = [
    Case(
        "SQLAlchemyPoolNearlyFull",
        pool_case(Pool(in_use=between(300, 600, 13.5, STEADY)), 900),
        before=405,
        firing=420,
        labels=WORKER,
        description=f"{WHERE} has had 90% of its connections in use for 2m: the next burst "
        "will make callers wait.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolExhausted",
        queued(200),
        before=285,
        firing=300,
        labels=WORKER,
        description=f"{WHERE} is full and the callers queued for a connection need about 2s "
        "to be served at the recent hold time.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolCallersWaiting",
        queued(3),
        before=345,
        firing=360,
        labels=WORKER,
        description=f"{WHERE} has been at capacity with callers waiting for 1m; 3 are waiting now.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolQueueExceedsTimeout",
        # 3,600 callers at 0.15 s holds on 15 connections: 36 s of queue; pages at once
        queued(3600),
        before=285,
        firing=300,
        labels=WORKER,
        description=f"{WHERE} is full and its queue needs 120% of the pool timeout to drain: "
        "its last callers will fail with TimeoutError.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolQueueNearTimeout",
        queued(2400),
        before=300,
        firing=315,
        labels=WORKER,
        description=f"{WHERE} is full and its queue needs 80% of the pool timeout to drain: "
        "checkouts will fail with TimeoutError unless load drops.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolCheckoutWaitNearTimeout",
        # from 300 s every checkout served waited 17.5 s, and callers keep waiting
        pool_case(
            Pool(
                in_use=between(300, 600, 15, STEADY),
                waiting=between(300, 600, 500, 0),
                wait=lambda k: 17.5 if 300 <= k * 15 < 600 else 0.001,
            ),
            900,
        ),
        before=300,
        firing=315,
        labels=labels(),
        # p99 of 2 fast and 2 slow intervals: 15 + 5 * (0.99 * 4 - 2) / 2 = 19.9 s of 30
        description="pool main on web-1:8000: the 99th percentile checkout over 1m waited "
        "66.33% of the pool timeout and callers are still waiting.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolCheckoutTimeouts",
        pool_case(Pool(in_use=lambda k: 15, timeouts=lambda k: 60 if k * 15 == 300 else 0), 600),
        before=285,
        firing=300,
        labels=labels(),
        description="pool main on web-1:8000: 1 checkouts/s timed out over the last 1m; the "
        "application is returning errors.",
        resolved=360,
    ),
    Case(
        "SQLAlchemyPoolHeadroomLow",
        # two minutes at capacity; the busiest 1m average reaches 100 % at the second sample
        pool_case(Pool(in_use=between(300, 420, 15, STEADY, 60)), 7 * 3600, interval=60),
        before=300,
        firing=360,
        labels=labels(),
        description="pool main on web-1:8000: its busiest 1m in the last 6h averaged 100% of "
        "capacity. Raise the pool (or the workers) before the next push.",
        resolved=420 + 6 * 3600 + 60,
    ),
    Case(
        "SQLAlchemyPoolConnectErrors",
        connect_errors,
        before=345,  # pending since 300 s
        firing=360,
        labels=labels(),
        description="pool main on web-1:8000: 50% of the attempts to open a connection failed "
        "over the last 5m.",
        resolved=900,
    ),
    Case(
        "SQLAlchemyPoolInvalidationStorm",
        invalidations,
        before=585,
        firing=600,
        labels=labels(),
        description="pool main on web-1:8000: connections amounting to 60% of the pool's "
        "capacity were invalidated over the last 5m (database restart, failover or network "
        "trouble).",
        resolved=915,
    ),
    Case(
        "SQLAlchemyFleetExceedsDatabaseLimit",
        fleet,
        before=1185,
        firing=1200,
        labels=DB,
        description="The pools of app may open 120% of the connections the database allows "
        "ordinary roles (max_connections minus reserved): under load, new connections will "
        "be refused.",
        resolved=1500,
    ),
    Case(
        "PoolExporterDatabaseConnectionsNearLimit",
        database_busy,
        before=585,
        firing=600,
        labels=DB,
        description="The database of app has 97% of the connection slots for ordinary roles "
        "in use.",
        resolved=900,
    ),
    Case(
        "PoolExporterDatabaseConnectionsExhausted",
        database_busy,
        before=345,
        firing=360,
        labels=DB,
        description="The database of app has 97% of the connection slots for ordinary roles "
        "in use: new connections are being refused.",
        resolved=900,
    ),
    Case(
        "PoolExporterDatabaseDown",
        database_down,
        before=405,
        firing=420,
        labels={"job": JOB, "instance": SIDECAR},
        description="The sidecar web-1:9187 of app has not been able to query the database for 2m.",
        resolved=450,
    ),
    Case(
        "SQLAlchemyPoolMetricsAbsent",
        metrics_absent,
        before=885,
        firing=900,
        labels={"job": JOB, "instance": INSTANCE},
        description="web-1:8000 of app reported connection pool metrics in the last 1h and "
        "has reported none for 10m: the pools are not watched.",
        resolved=1500,
    ),
]


# -- quiet when nothing is wrong --------------------------------------------------------------


def steady(rules: dict[str, Rule]) -> UnitTest:
    """Two workers at 70 %, checkouts fast, the database half used, for 7 hours (the headroom
    window is 6); every alert is checked at several times."""
    s = Series(60, 7 * 60 + 1)
    Pool(in_use=lambda k: STEADY, pids=("101", "102")).add(s)
    database(s, lambda k: 50.0)
    times = [60 * k for k in (2, 3, 5, 10, 30, 90, 240, 420)]
    return UnitTest(
        "nothing fires at a steady 70 % utilisation for 7 hours",
        s,
        [(t, a, []) for t in times for a in rules],
    )


def one_scrape_queue(rules: dict[str, Rule], cfg: AlertConfig) -> UnitTest:
    """A deploy: one scrape catches the pool full with a queue needing 80 % of the timeout,
    the next finds it drained. Only a queue longer than the whole timeout pages at once; this
    one would need a second evaluation. The chat warning may go out."""
    s = Series(15, 41)
    Pool(in_use=between(300, 315, 15.0, 1.0), waiting=between(300, 315, 2400.0, 0.0)).add(s)
    pages = [a for a, rule in rules.items() if rule["labels"]["severity"] == cfg.severity_page]
    return UnitTest(
        "a queue short of the pool timeout, seen at one scrape, pages nobody",
        s,
        [(t, a, []) for t in (300, 315, 330) for a in pages],
    )


def lone_waiter(rules: dict[str, Rule]) -> UnitTest:
    """One caller waits at one scrape (the pool momentarily full at a steady 70 %)."""
    s = Series(15, 41)
    Pool(in_use=between(300, 315, 15.0, STEADY), waiting=between(300, 315, 1.0, 0.0)).add(s)
    return UnitTest(
        "a lone waiter at full capacity alerts nobody",
        s,
        [(t, a, []) for t in (300, 315, 330) for a in rules],
    )


# -- the incident: a push saturates the pool within one scrape --------------------------------

TROUBLE = 300  # the first scrape that shows the pool full
USERS = 2000


def burst(interval: int, hold: float) -> Series:
    """An almost idle pool (1 in use, 7 checkouts/s); at TROUBLE every connection is out and
    2,000 callers queue (2,000 * `hold` / 15 s of work); the pool serves 15 / `hold`
    checkouts/s, each having waited as long as the push has run; the first checkouts time
    out 30 s (the pool timeout) after TROUBLE."""
    k0 = TROUBLE // interval

    def pushed(k: int) -> bool:
        return k >= k0

    s = Series(interval, (TROUBLE + 120) // interval + 1)
    Pool(
        in_use=lambda k: 15.0 if pushed(k) else 1.0,
        waiting=lambda k: float(USERS) if pushed(k) else 0.0,
        hold=hold,
        served=lambda k: 15.0 / hold if pushed(k) else 7.0,
        wait=lambda k: min(30.0, (k - k0 + 0.5) * interval) if pushed(k) else 0.001,
        timeouts=lambda k: 50.0 if k * interval >= TROUBLE + 30 else 0.0,
    ).add(s)
    database(s, lambda k: 50.0)
    return s


@dataclass(frozen=True)
class Incident:
    """The burst with connections held `hold` seconds: its queue needs `queue` (as
    humanizeDuration writes it), `share` of the pool timeout."""

    hold: float
    queue: str
    share: str

    @property
    def certain(self) -> bool:
        """Whether the queue outlasts the whole pool timeout."""
        return USERS * self.hold / 15 >= 30


# 0.15 s holds make a 20 s queue (a page at the second evaluation); 0.42 s, about the demo's
# mean hold, a 56 s one (a page at the first).
INCIDENTS = (Incident(0.15, "20s", "66.67%"), Incident(0.42, "56s", "186.7%"))


def incident(rules: dict[str, Rule], interval: int, push: Incident) -> UnitTest:
    """Warning at the first evaluation that sees the pool full, before the evaluation where
    the timeout counter first moves (TROUBLE + 30 s); the page at once when the queue needs
    the whole pool timeout, one evaluation later when it needs half of it."""
    hold, share, certain = push.hold, push.share, push.certain
    warning = expected(
        rules["SQLAlchemyPoolExhausted"],
        WORKER,
        f"{WHERE} is full and the callers queued for a connection need about {push.queue} "
        "to be served at the recent hold time.",
    )
    exceeds = expected(
        rules["SQLAlchemyPoolQueueExceedsTimeout"],
        WORKER,
        f"{WHERE} is full and its queue needs {share} of the pool timeout to drain: its last "
        "callers will fail with TimeoutError.",
    )
    near = expected(
        rules["SQLAlchemyPoolQueueNearTimeout"],
        WORKER,
        f"{WHERE} is full and its queue needs {share} of the pool timeout to drain: checkouts "
        "will fail with TimeoutError unless load drops.",
    )
    timeouts = expected(
        rules["SQLAlchemyPoolCheckoutTimeouts"],
        labels(),
        "pool main on web-1:8000: 833.3m checkouts/s timed out over the last 1m; the "
        "application is returning errors.",
    )
    counted = TROUBLE + 30
    checks: list[tuple[int, str, list[Expected]]] = [
        (TROUBLE - interval, "SQLAlchemyPoolExhausted", []),
        (TROUBLE - interval, "SQLAlchemyPoolQueueExceedsTimeout", []),
        (TROUBLE, "SQLAlchemyPoolExhausted", [warning]),
        (TROUBLE, "SQLAlchemyPoolQueueExceedsTimeout", [exceeds] if certain else []),
        (TROUBLE, "SQLAlchemyPoolQueueNearTimeout", []),  # pending: one evaluation only
        (TROUBLE + interval, "SQLAlchemyPoolQueueNearTimeout", [near]),
        (counted - interval, "SQLAlchemyPoolCheckoutTimeouts", []),
        (counted - interval, "SQLAlchemyPoolExhausted", [warning]),
        (counted - interval, "SQLAlchemyPoolQueueExceedsTimeout", [exceeds] if certain else []),
        (counted - interval, "SQLAlchemyPoolQueueNearTimeout", [near]),
        (counted, "SQLAlchemyPoolCheckoutTimeouts", [timeouts]),
    ]
    when = "at the first evaluation" if certain else "at the second evaluation"
    return UnitTest(
        f"the incident at {interval}s, {hold:g} s holds ({push.queue} of queue): warning at "
        f"the first evaluation, page {when}, both before the first timeout is counted",
        burst(interval, hold),
        checks,
    )


# -- the files --------------------------------------------------------------------------------


def covers(cfg: AlertConfig) -> bool:
    """Whether the cases hold for the rules of `cfg`: they are written for the default
    selectors, thresholds and durations."""
    default = AlertConfig()
    return dataclasses.replace(cfg, **{n: getattr(default, n) for n in PRESENTATION}) == default


def unit_tests(cfg: AlertConfig) -> list[UnitTest]:
    rules = {r["alert"]: r for r in alert_rules(groups(cfg))}
    return [
        *(case.unit_test(rules) for case in CASES),
        steady(rules),
        one_scrape_queue(rules, cfg),
        lone_waiter(rules),
        *(incident(rules, interval, push) for interval in (15, 5) for push in INCIDENTS),
    ]


def promtool_files(cfg: AlertConfig, rules_file: str) -> dict[str, dict[str, Any]]:
    """{path relative to the rules' directory: promtool test file}, none when the cases do
    not hold for `cfg`'s rules."""
    if not covers(cfg):
        return {}
    # Rules are evaluated as often as the series are scraped, as in the recommended setup.
    by_interval: dict[int, list[UnitTest]] = {}
    for test in unit_tests(cfg):
        by_interval.setdefault(test.series.interval, []).append(test)
    return {
        f"{TESTS_DIR}/evaluation-{interval}s.test.yml": {
            # promtool resolves rule_files from the test file's directory
            "rule_files": [f"../{rules_file}"],
            "evaluation_interval": f"{interval}s",
            "tests": [t.document() for t in tests],
        }
        for interval, tests in sorted(by_interval.items(), reverse=True)
    }
