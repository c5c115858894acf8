"""promtool tests of the rules generated with a `cluster_label`: two clusters, "eu" and "us",
whose services, instances, pools and worker slots have the same names, as two copies of one
deployment would. Trouble in one cluster must fire for that cluster only, and say which.

The rules under test are generated beside the test file (`several-clusters.rules.yml`); the
cases hold for any config the default cases hold for, with `cluster_label: cluster`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from pool_exporter import metrics as m
from pool_exporter.mixin.config import MixinConfig

from . import promtool_series as ps
from .promtool_series import Pool, Series, labels, one

CLUSTER = "cluster"
RULES = "several-clusters.rules.yml"
TESTS = "several-clusters.test.yml"
STEADY = 10.5  # 70 % of 15


def config(cfg: MixinConfig) -> MixinConfig:
    return dataclasses.replace(cfg, cluster_label=CLUSTER)


def two_clusters(
    seconds: int, eu: Callable[[Series], None], us: Callable[[Series], None]
) -> Series:
    """The series of both clusters: `eu` and `us` add each one's, labelled with its cluster."""
    samples = seconds // 15 + 1
    found = []
    for name, add in (("eu", eu), ("us", us)):
        part = Series(15, samples, common={CLUSTER: name})
        add(part)
        found.extend(part.found)
    return Series(15, samples, found=found)


def exhausted_in_eu() -> Series:
    """eu's pool full with 200 callers queued from 300 s to 600 s; us at a steady 70 %."""

    def eu(s: Series) -> None:
        Pool(in_use=ps.between(300, 600, 15, STEADY), waiting=ps.between(300, 600, 200, 0)).add(s)
        ps.database(s, lambda k: 50.0)

    def us(s: Series) -> None:
        Pool(in_use=lambda k: STEADY).add(s)
        ps.database(s, lambda k: 50.0)

    return two_clusters(900, eu, us)


def fleet_grows_in_eu() -> Series:
    """Each cluster has its own database (100 slots) and four workers of 15 (60); eu runs
    eight from 300 s to 1500 s (120). Added up across clusters, 120 would exceed 100 from the
    start."""

    def fleet(grows: bool) -> Callable[[Series], None]:
        def add(s: Series) -> None:
            Pool(in_use=lambda k: STEADY, workers=("0", "1", "2", "3")).add(s)
            if grows:
                for slot in ("4", "5", "6", "7"):
                    worker = labels(**{m.WORKER_LABEL: slot})
                    s.gauge(m.MAX_CONNECTIONS.name, worker, ps.between(300, 1500, 15.0, None))
            ps.database(s, lambda k: 50.0)

        return add

    return two_clusters(1800, fleet(True), fleet(False))


def absent_in_eu() -> Series:
    """eu's web-1 keeps answering scrapes without pool metrics from 300 s to 1500 s; us's
    web-1, the same job and instance name, keeps reporting."""
    info = labels(pool_class="QueuePool", dialect="sqlite", driver="pysqlite")

    def reporting(stops: bool) -> Callable[[Series], None]:
        def add(s: Series) -> None:
            s.gauge(m.INFO.sample, info, ps.between(300, 1500, None, 1.0) if stops else one)
            s.gauge("up", {"job": ps.JOB, "instance": ps.INSTANCE}, one)

        return add

    return two_clusters(1800, reporting(True), reporting(False))


EU = {CLUSTER: "eu"}
CASES = [
    ps.Case(
        "SQLAlchemyPoolExhausted",
        exhausted_in_eu,
        severity="warning",
        summary="A connection pool is exhausted: callers are queueing for a connection.",
        runbook_url=f"{ps.RUNBOOKS}#sqlalchemypoolexhausted",
        before=285,
        firing=300,
        labels={**labels(**{m.WORKER_LABEL: "0"}), **EU},
        description="pool main on web-1:8000 in cluster eu (worker 0) is full and the callers "
        "queued for a connection need about 2s to be served at the recent hold time.",
        resolved=600,
    ),
    ps.Case(
        "SQLAlchemyFleetExceedsDatabaseLimit",
        fleet_grows_in_eu,
        severity="warning",
        summary="The pools together may open more connections than the database allows.",
        runbook_url=f"{ps.RUNBOOKS}#sqlalchemyfleetexceedsdatabaselimit",
        before=1185,
        firing=1200,
        labels={"job": ps.JOB, **EU},
        description="The pools of app in cluster eu may open 120% of the connections the "
        "database allows ordinary roles (max_connections minus reserved): under load, new "
        "connections will be refused.",
        resolved=1500,
    ),
    ps.Case(
        "SQLAlchemyPoolMetricsAbsent",
        absent_in_eu,
        severity="warning",
        summary="Pool metrics have disappeared.",
        runbook_url=f"{ps.RUNBOOKS}#sqlalchemypoolmetricsabsent",
        before=885,
        firing=900,
        labels={"job": ps.JOB, "instance": ps.INSTANCE, **EU},
        description="web-1:8000 of app in cluster eu reported connection pool metrics in the "
        "last 1h and has reported none for 10m: the pools are not watched.",
        resolved=1500,
    ),
]


def promtool_file(cfg: MixinConfig) -> dict[str, Any]:
    """The promtool test file of the several-cluster rules (in the same directory)."""
    shown = ps.Presented.of(cfg)
    tests: list[ps.UnitTest] = [
        dataclasses.replace(test, name=f"two clusters, trouble in eu only: {test.name}")
        for test in (case.unit_test(shown) for case in CASES)
    ]
    return {
        "rule_files": [RULES],
        "evaluation_interval": "15s",
        "tests": [t.document() for t in tests],
    }
