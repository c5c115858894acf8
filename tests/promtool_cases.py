"""Synthetic series for `promtool test rules`: a pool (per worker gauges, summed counters and
histograms), the sidecar's database view and `up`, sampled at a fixed interval."""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pool_exporter import metrics as m

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


@dataclass
class Series:
    """Input series of one promtool test: gauges from a function of the sample index,
    counters from their increase per interval."""

    interval: int  # seconds
    samples: int
    found: list[dict[str, str]] = field(default_factory=list)

    def at(self, seconds: float) -> int:
        return int(seconds // self.interval)

    def gauge(self, name: str, lbls: dict[str, str], fn: Fn) -> None:
        values = [fn(k) for k in range(self.samples)]
        self._add(name, lbls, values)

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
        bounds = [*metric.buckets, math.inf]
        for bound in bounds:
            le = "+Inf" if bound == math.inf else f"{bound:g}"
            self.counter(
                metric.name + "_bucket",
                {**lbls, "le": le},
                lambda k, b=bound: sum(n for v, n in observed(k).items() if v <= b),
            )
        self.counter(metric.name + "_count", lbls, lambda k: sum(observed(k).values()))
        self.counter(
            metric.name + "_sum", lbls, lambda k: sum(v * n for v, n in observed(k).items())
        )

    def _add(self, name: str, lbls: dict[str, str], values: Sequence[Value]) -> None:
        text = " ".join("stale" if v is None else repr(float(v)) for v in values)
        self.found.append({"series": series_name(name, lbls), "values": text})


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
            worker = labels(pid=pid) if pid else labels()
            s.gauge(m.CONNECTIONS.name, {**worker, "state": "in_use"}, self.in_use)
            s.gauge(m.WAITING.name, worker, self.waiting)
            s.gauge(m.MAX_CONNECTIONS.name, worker, lambda k: self.capacity)
            s.gauge(m.TIMEOUT.name, worker, lambda k: self.timeout)
        n = len(self.pids)
        per_interval = lambda k: self.served(k) * s.interval * n  # noqa: E731
        s.histogram(m.HOLD, labels(), lambda k: {self.hold: per_interval(k)})
        s.histogram(m.CHECKOUT_WAIT, labels(), lambda k: {self.wait(k): per_interval(k)})
        s.counter(m.CHECKOUT_TIMEOUTS.sample, labels(), self.timeouts)
        s.counter(m.CONNECTS.sample, labels(), self.connects)
        s.counter(m.CONNECT_ERRORS.sample, labels(), self.connect_errors)
        s.counter(m.INVALIDATIONS.sample, labels(soft="false"), self.invalidations)
        s.counter(m.INVALIDATIONS.sample, labels(soft="true"), lambda k: 0.0)
        s.gauge(info(), labels(pool_class="QueuePool", dialect="sqlite", driver="pysqlite"), one)
        s.gauge("up", {"job": JOB, "instance": INSTANCE}, one)


def one(k: int) -> float:
    return 1.0


def info() -> str:
    return m.INFO.name + "_info"


def database(s: Series, used: Fn, up: Fn = one, max_connections: float = 103.0) -> None:
    """The sidecar's view: 3 reserved slots, so 100 for ordinary roles; `used` of them by
    client connections, split 3:1 between active and idle."""
    sidecar = {"job": JOB, "instance": SIDECAR}
    s.gauge(m.DATABASE_MAX_CONNECTIONS.name, sidecar, lambda k: max_connections)
    s.gauge(m.DATABASE_RESERVED_CONNECTIONS.name, sidecar, lambda k: 3.0)
    s.gauge(m.DATABASE_UP.name, sidecar, up)
    for state, share in (("active", 0.75), ("idle", 0.25)):
        s.gauge(
            m.DATABASE_CONNECTIONS.name,
            {**sidecar, "database": "shop", "state": state, "application_name": "web"},
            lambda k, share=share: None if (u := used(k)) is None else u * share,
        )


def expected(
    rule: dict[str, Any], lbls: dict[str, str], description: str
) -> dict[str, dict[str, str]]:
    """An alert as promtool reports it: the rule's labels and its rendered annotations."""
    return {
        "exp_labels": {**lbls, **rule["labels"]},
        "exp_annotations": {
            "summary": rule["annotations"]["summary"],
            "description": description,
            "runbook_url": rule["annotations"]["runbook_url"],
        },
    }


def promtool_test(
    promtool: str,
    rules: Path,
    tmp: Path,
    series: Series,
    checks: list[tuple[float, str, list[dict[str, Any]]]],
    *,
    name: str = "case",
) -> subprocess.CompletedProcess[str]:
    """Run one promtool test: `checks` are (eval seconds, alertname, expected alerts)."""
    test = {
        "rule_files": [str(rules.resolve())],
        "evaluation_interval": f"{series.interval}s",
        "tests": [
            {
                "name": name,
                "interval": f"{series.interval}s",
                "input_series": series.found,
                "alert_rule_test": [
                    {"eval_time": f"{int(t)}s", "alertname": a, "exp_alerts": exp}
                    for t, a, exp in checks
                ],
            }
        ],
    }
    path = tmp / f"{name}.test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False, width=1_000_000))
    return subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
