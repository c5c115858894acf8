"""The Grafana dashboard, written with grafanalib from one config; `pool-exporter dashboards`.

grafanalib 0.7.1 writes an old dashboard shape (schema 12, legacy panel keys, a target format
from Grafana 5). The panels are built with grafanalib and the result is brought to the shape
Grafana 10/11 write for schema 39: datasource references as objects on every panel and target,
the new heatmap panel, `showLegend` on legends, no keys that schema dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import attr
from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

from pool_exporter import metrics as m

from .config import AlertConfig
from .shipped import DASHBOARD_FILE

SCHEMA_VERSION = 39  # Grafana 10.3/10.4; 11.x migrates it forward without changes to panels
PLUGIN_VERSION = "10.4.0"
DATASOURCE_VARIABLE = "datasource"
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${" + DATASOURCE_VARIABLE + "}"}
GRAFANA_DATASOURCE: dict[str, str] = {"type": "grafana", "uid": "-- Grafana --"}
ALL_VALUE = ".*"  # so "All" also matches series without the label (single-process: no pid)


@dataclass(frozen=True)
class Thresholds:
    """Where the dashboard draws its warning and critical lines: where the alert rules fire."""

    utilisation_warning: float  # in use / max connections of one pool in one worker
    utilisation_critical: float
    # The fleet's possible connections / the database's slots for ordinary roles, where
    # SQLAlchemyFleetExceedsDatabaseLimit (a warning, so an orange band) fires.
    fleet_share: float

    @classmethod
    def from_alerts(cls, alerts: AlertConfig) -> Thresholds:
        return cls(
            utilisation_warning=alerts.utilisation_warning,
            # The pages are about the queue, which only forms at capacity: the red band starts
            # where callers wait.
            utilisation_critical=1.0,
            fleet_share=alerts.fleet_share,
        )


@dataclass(frozen=True)
class DashboardConfig:
    """Everything a deployment may change: identity, extra selectors and thresholds."""

    uid: str = "pool-exporter"
    title: str = "SQLAlchemy connection pools"
    filename: str = DASHBOARD_FILE
    # Extra label matchers added to every selector, e.g. 'service="shop"'.
    selector: str = ""
    thresholds: Thresholds = field(default_factory=lambda: Thresholds.from_alerts(AlertConfig()))
    refresh: str = "30s"
    time_from: str = "now-3h"
    tags: tuple[str, ...] = ("pool-exporter", "sqlalchemy", "connection-pool")


# -- selectors ------------------------------------------------------------------------------


def _matchers(cfg: DashboardConfig, *, instance: bool = True, pool: bool = True) -> list[str]:
    found = ['job=~"$job"']
    if instance:
        found.append('instance=~"$instance"')
    if pool:
        found.append('pool=~"$pool"')
    if cfg.selector:
        found.append(cfg.selector)
    return found


def gauge(cfg: DashboardConfig, metric: m.Metric, *extra: str) -> str:
    """A per-worker gauge: gauges carry `pid` in multiprocess mode."""
    return _series(metric.sample, [*_matchers(cfg), 'pid=~"$worker"', *extra])


def counter(cfg: DashboardConfig, metric: m.Metric, suffix: str = "") -> str:
    """A counter or histogram: summed across workers by prometheus-client, so no `pid`."""
    return _series(metric.sample + suffix, _matchers(cfg))


def database(cfg: DashboardConfig, metric: m.Metric) -> str:
    """A sidecar's database series: the database is the fleet's, so no instance or pool."""
    return _series(metric.sample, _matchers(cfg, instance=False, pool=False))


def fleet(cfg: DashboardConfig, metric: m.Metric) -> str:
    """Every pool of every worker of every instance of the chosen jobs."""
    return _series(metric.sample, _matchers(cfg, instance=False, pool=False))


def pooler(cfg: DashboardConfig, metric: m.Metric) -> str:
    """A sidecar's PgBouncer series: the pooler serves the fleet, so no instance or pool."""
    return _series(metric.sample, _matchers(cfg, instance=False, pool=False))


def _series(name: str, matchers: Sequence[str]) -> str:
    return f"{name}{{{','.join(matchers)}}}" if matchers else name


# -- building blocks ------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A Prometheus query of a panel, in the target shape Grafana 10/11 write."""

    expr: str
    legend: str = "__auto"
    heatmap: bool = False
    instant: bool = False

    def target(self, ref_id: str) -> dict[str, Any]:
        return {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": self.expr,
            "format": "heatmap" if self.heatmap else "time_series",
            "instant": self.instant,
            "legendFormat": self.legend,
            "range": not self.instant,
            "refId": ref_id,
        }


def _targets(queries: Sequence[Query]) -> list[dict[str, Any]]:
    return [q.target(chr(ord("A") + i)) for i, q in enumerate(queries)]


def _steps(warning: float | None = None, critical: float | None = None) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if warning is not None:
        steps.append({"color": "orange", "value": warning})
    if critical is not None:
        steps.append({"color": "red", "value": critical})
    return steps


def _override(regex: str, color: str, *, dashed: bool = False) -> dict[str, Any]:
    properties: list[dict[str, Any]] = [
        {"id": "color", "value": {"fixedColor": color, "mode": "fixed"}}
    ]
    if dashed:
        properties.append({"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}})
        properties.append({"id": "custom.fillOpacity", "value": 0})
        properties.append({"id": "custom.stacking", "value": {"group": "A", "mode": "none"}})
    return {"matcher": {"id": "byRegexp", "options": regex}, "properties": properties}


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    steps: list[dict[str, Any]] | None = None,
    threshold_style: str = "off",
    overrides: Sequence[dict[str, Any]] = (),
    stacked: bool = False,
    max_value: int | None = None,
) -> g.TimeSeries:
    return g.TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=_targets(queries),
        unit=unit,
        thresholds=steps or _steps(),
        thresholdsStyleMode=threshold_style,
        overrides=list(overrides),
        stacking={"group": "A", "mode": "normal" if stacked else "none"},
        fillOpacity=20 if stacked else 10,
        valueMin=0,
        valueMax=max_value,
        legendDisplayMode="table",
        legendPlacement="right" if len(queries) > 2 else "bottom",
        legendCalcs=["lastNotNull", "max"],
        tooltipMode="multi",
        tooltipSort="desc",
        showPoints="never",
    )


@attr.s
class CheckoutHeatmap(g.Panel):  # type: ignore[misc]
    """The heatmap panel of Grafana 9.1+ (grafanalib's `Heatmap` is the old Angular one)."""

    unit: str = attr.ib(default="s")

    def to_json_data(self) -> dict[str, Any]:
        return self.panel_json(  # type: ignore[no-any-return]
            {
                "fieldConfig": {
                    "defaults": {
                        "custom": {
                            "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                            "scaleDistribution": {"type": "linear"},
                        },
                        "unit": self.unit,
                    },
                    "overrides": [],
                },
                "options": {
                    "calculate": False,  # Prometheus already bucketed the data (format=heatmap)
                    "cellGap": 1,
                    "color": {
                        "exponent": 0.5,
                        "fill": "dark-orange",
                        "mode": "scheme",
                        "reverse": False,
                        "scale": "exponential",
                        "scheme": "Oranges",
                        "steps": 64,
                    },
                    "exemplars": {"color": "rgba(255,0,255,0.7)"},
                    "filterValues": {"le": 1e-9},
                    "legend": {"show": True},
                    "rowsFrame": {"layout": "auto"},
                    "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
                    "yAxis": {"axisPlacement": "left", "reverse": False, "unit": self.unit},
                    "showValue": "never",
                },
                "pluginVersion": PLUGIN_VERSION,
                "type": "heatmap",
            }
        )


def heatmap(title: str, description: str, query: Query) -> CheckoutHeatmap:
    # grafanalib's attributes are invisible to mypy's attrs plugin (the package is untyped).
    kwargs: dict[str, Any] = {
        "title": title,
        "description": description,
        "dataSource": DATASOURCE,
        "targets": _targets([query]),
    }
    return CheckoutHeatmap(**kwargs)


def stat(
    title: str, description: str, unit: str, query: Query, steps: list[dict[str, Any]]
) -> g.Stat:
    return g.Stat(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=_targets([query]),
        format=unit,
        thresholds=steps,
        reduceCalc="lastNotNull",
        colorMode="background",
        graphMode="none",
        noValue="no data",
    )


def _quantiles(metric: m.Metric, cfg: DashboardConfig) -> list[Query]:
    buckets = counter(cfg, metric, "_bucket")
    return [
        Query(
            f"histogram_quantile({q}, sum by (le, pool) (rate({buckets}[$__rate_interval])))",
            f"p{round(q * 100)} {{{{pool}}}}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def _rate(cfg: DashboardConfig, metric: m.Metric, by: str = "pool") -> str:
    return f"sum by ({by}) (rate({counter(cfg, metric)}[$__rate_interval]))"


WORKER = "{{pool}} {{instance}} {{pid}}"


# -- the panels -----------------------------------------------------------------------------

Row = tuple[str, list[tuple[g.Panel, int, int]]]  # title, (panel, width, height)


def saturation(cfg: DashboardConfig) -> Row:
    t = cfg.thresholds
    by = "job, instance, pool, pid"
    in_use = gauge(cfg, m.CONNECTIONS, 'state="in_use"')
    idle = gauge(cfg, m.CONNECTIONS, 'state="idle"')
    utilisation = timeseries(
        "Pool utilisation per worker",
        "Connections in use / the pool's max connections, one line per pool and worker: a "
        "line in the red band is a worker whose callers are about to wait; the bands are the "
        "alert thresholds.",
        "percentunit",
        [
            Query(
                f"max by ({by}) ({in_use}) / max by ({by}) ({gauge(cfg, m.MAX_CONNECTIONS)})",
                WORKER,
            )
        ],
        steps=_steps(t.utilisation_warning, t.utilisation_critical),
        threshold_style="line+area",
        max_value=1,
    )
    capacity = timeseries(
        "In use vs capacity",
        "Connections in use and idle (stacked) against pool_size and pool_size + max_overflow "
        "(dashed), summed over the chosen workers: in use above pool_size is overflow.",
        "short",
        [
            Query(f"sum by (pool) ({in_use})", "in use {{pool}}"),
            Query(f"sum by (pool) ({idle})", "idle {{pool}}"),
            Query(f"sum by (pool) ({gauge(cfg, m.OVERFLOW)})", "overflow {{pool}}"),
            Query(f"sum by (pool) ({gauge(cfg, m.SIZE)})", "pool_size {{pool}}"),
            Query(f"sum by (pool) ({gauge(cfg, m.MAX_CONNECTIONS)})", "capacity {{pool}}"),
        ],
        stacked=True,
        overrides=[
            _override("^overflow .*", "orange", dashed=True),
            _override("^pool_size .*", "blue", dashed=True),
            _override("^capacity .*", "red", dashed=True),
        ],
    )
    waiting = timeseries(
        "Callers waiting for a connection",
        "Callers inside the pool's checkout right now, per pool and worker: anything above 0 "
        "for more than a moment means the pool is exhausted in that worker.",
        "short",
        [Query(f"max by ({by}) ({gauge(cfg, m.WAITING)})", WORKER)],
        steps=_steps(1),
        threshold_style="line",
    )
    return "Saturation", [(utilisation, 12, 9), (capacity, 12, 9), (waiting, 24, 7)]


def latency(cfg: DashboardConfig) -> Row:
    wait_buckets = counter(cfg, m.CHECKOUT_WAIT, "_bucket")
    wait_map = heatmap(
        "Checkout wait (heatmap)",
        "How many checkouts waited how long (successful ones), per interval: a band rising "
        "toward the pool timeout is a pool running dry.",
        Query(
            f"sum by (le) (increase({wait_buckets}[$__rate_interval]))",
            "{{le}}",
            heatmap=True,
        ),
    )
    wait = timeseries(
        "Checkout wait p50 / p95 / p99 vs pool timeout",
        "Percentiles of the wait for a connection against the pool timeout (red dashed): "
        "where p99 meets the timeout, callers start getting TimeoutError.",
        "s",
        [
            *_quantiles(m.CHECKOUT_WAIT, cfg),
            Query(f"max by (pool) ({gauge(cfg, m.TIMEOUT)})", "timeout {{pool}}"),
        ],
        overrides=[_override("^timeout .*", "red", dashed=True)],
    )
    hold = timeseries(
        "Connection hold time p50 / p95 / p99",
        "How long the application keeps a connection, checkout to checkin: a rising hold time "
        "with steady traffic fills the pool (Little's law: in use = checkouts/s x hold).",
        "s",
        _quantiles(m.HOLD, cfg),
    )
    checkouts = timeseries(
        "Checkouts per second",
        "Successful checkouts per second per pool: the demand the pool serves.",
        "ops",
        [Query(_rate(cfg, m.CHECKOUTS), "{{pool}}")],
    )
    return "Latency", [(wait_map, 12, 9), (wait, 12, 9), (hold, 12, 8), (checkouts, 12, 8)]


def errors(cfg: DashboardConfig) -> Row:
    timeouts = timeseries(
        "Checkout timeouts and failures",
        "Checkouts per second that raised the pool's TimeoutError, were cancelled, or failed "
        "otherwise: every timeout is a request that failed for want of a connection.",
        "ops",
        [
            Query(_rate(cfg, m.CHECKOUT_TIMEOUTS), "timeouts {{pool}}"),
            Query(_rate(cfg, m.CHECKOUT_CANCELLATIONS), "cancelled {{pool}}"),
            Query(_rate(cfg, m.CHECKOUT_ERRORS), "errors {{pool}}"),
        ],
        steps=_steps(None, 0.001),
        threshold_style="line",
    )
    connect_errors = timeseries(
        "Connect errors",
        "Failed attempts per second to open a database connection: the database refused "
        "(often: too many connections) or could not be reached.",
        "ops",
        [Query(_rate(cfg, m.CONNECT_ERRORS), "{{pool}}")],
    )
    invalidations = timeseries(
        "Invalidations",
        "Connections invalidated per second (soft: replaced at the next checkout); a burst "
        "usually follows a database restart or failover.",
        "ops",
        [Query(_rate(cfg, m.INVALIDATIONS, "pool, soft"), "{{pool}} soft={{soft}}")],
    )
    hooks = timeseries(
        "Exporter hook errors",
        "Exceptions inside pool-exporter's own hooks, swallowed so the application goes on: "
        "anything but 0 means the pool metrics may be off; see the application log.",
        "ops",
        [Query(_rate(cfg, m.HOOK_ERRORS, "pool, hook"), "{{pool}} {{hook}}")],
    )
    return "Errors", [(p, 6, 8) for p in (timeouts, connect_errors, invalidations, hooks)]


def churn(cfg: DashboardConfig) -> Row:
    new = timeseries(
        "New, closed and detached connections",
        "Connections opened, closed and detached per second: steady opening under steady "
        "traffic means the pool is too small or recycles too often.",
        "ops",
        [
            Query(_rate(cfg, m.CONNECTS), "opened {{pool}}"),
            Query(_rate(cfg, m.CLOSES), "closed {{pool}}"),
            Query(_rate(cfg, m.DETACHES), "detached {{pool}}"),
        ],
    )
    connect = timeseries(
        "Connect latency p50 / p95 / p99",
        "Time to open a new database connection: each new connection costs a caller this much.",
        "s",
        _quantiles(m.CONNECT_TIME, cfg),
    )
    return "Churn", [(new, 12, 8), (connect, 12, 8)]


def database_and_fleet(cfg: DashboardConfig) -> Row:
    t = cfg.thresholds
    # Every sidecar reports the same server: max, not sum, across sidecars.
    max_conn = f"max({database(cfg, m.DATABASE_MAX_CONNECTIONS)})"
    reserved = f"max({database(cfg, m.DATABASE_RESERVED_CONNECTIONS)})"
    available = f"({max_conn} - {reserved})"
    fleet_capacity = f"sum({fleet(cfg, m.MAX_CONNECTIONS)})"
    by_state = timeseries(
        "Database connections by state and application",
        "Client connections open on the database (stacked, by state and application_name, "
        "every client not only these pools) against max_connections and the slots left to "
        "ordinary roles (dashed): the stack touching the line means new connections fail.",
        "short",
        [
            Query(
                "max by (database, state, application_name) "
                f"({database(cfg, m.DATABASE_CONNECTIONS)})",
                "{{application_name}} {{state}} ({{database}})",
            ),
            Query(max_conn, "max_connections"),
            Query(available, "available to applications"),
        ],
        stacked=True,
        overrides=[
            _override("^max_connections$", "red", dashed=True),
            _override("^available to applications$", "orange", dashed=True),
        ],
    )
    capacity = timeseries(
        "Fleet's possible connections vs the database",
        "What every pool of every worker may open at once (sum of pool_size + max_overflow) "
        "and has open now, against the database's max_connections: a fleet that can open more "
        "than the database accepts fails under load, whatever each pool's own utilisation.",
        "short",
        [
            Query(fleet_capacity, "fleet can open"),
            Query(f"sum({fleet(cfg, m.CONNECTIONS)})", "fleet has open"),
            Query(max_conn, "max_connections"),
            Query(available, "available to applications"),
        ],
        overrides=[
            _override("^max_connections$", "red", dashed=True),
            _override("^available to applications$", "orange", dashed=True),
        ],
    )
    share = timeseries(
        "Fleet's share of the database",
        "The fleet's possible connections / the database's slots for applications: above 1 the "
        "pools together may ask for more connections than the database can give; the band is "
        "the alert threshold.",
        "percentunit",
        [Query(f"{fleet_capacity} / {available}", "fleet capacity / available slots")],
        steps=_steps(t.fleet_share),
        threshold_style="line+area",
    )
    up = stat(
        "Database reachable",
        "Whether every sidecar's last query of the database succeeded (0: one could not).",
        "bool_yes_no",
        Query(f"min({database(cfg, m.DATABASE_UP)})", "up"),
        [{"color": "red", "value": None}, {"color": "green", "value": 1}],
    )
    return "Database and fleet", [(by_state, 12, 9), (capacity, 12, 9), (share, 18, 7), (up, 6, 7)]


def through_the_pooler(cfg: DashboardConfig) -> Row:
    """Left to right as a request goes: the fleet's pools, the pooler's clients, the pooler's
    server connections, the database's connections."""
    pools_in_use = f'sum({fleet(cfg, m.CONNECTIONS).removesuffix("}")},state="in_use"}})'
    fleet_pools = timeseries(
        "1. Fleet's pools",
        "Connections the fleet's pools have checked out, callers waiting in the pools, and "
        "what the pools may open: every checked-out connection is a client of the pooler.",
        "short",
        [
            Query(pools_in_use, "pools in use"),
            Query(f"sum({fleet(cfg, m.WAITING)})", "callers waiting in the pools"),
            Query(f"sum({fleet(cfg, m.MAX_CONNECTIONS)})", "pools can open"),
        ],
        overrides=[_override("^pools can open$", "red", dashed=True)],
    )
    clients = timeseries(
        "2. Pooler: client connections",
        "The pooler's client connections by state, per pooler: waiting ones are queued for a "
        "server connection (their application connection is checked out meanwhile), against "
        "max_client_conn (dashed).",
        "short",
        [
            Query(
                f"sum by (pooler, state) ({pooler(cfg, m.PGBOUNCER_CLIENTS)})",
                "{{pooler}} {{state}}",
            ),
            Query(
                f"max by (pooler) ({pooler(cfg, m.PGBOUNCER_MAX_CLIENT_CONN)})",
                "{{pooler}} max_client_conn",
            ),
        ],
        stacked=True,
        overrides=[
            _override(".* waiting$", "orange"),
            _override(".* max_client_conn$", "red", dashed=True),
        ],
    )
    servers = timeseries(
        "3. Pooler: server connections vs pool size",
        "The pooler's server connections by state (stacked) per pooler and database, against "
        "the pool size (dashed): active at the pool size while clients wait is the pooler "
        "limiting the database, as it should in transaction mode.",
        "short",
        [
            Query(
                f"sum by (pooler, database, state) ({pooler(cfg, m.PGBOUNCER_SERVERS)})",
                "{{pooler}} {{database}} {{state}}",
            ),
            Query(
                f"max by (pooler, database) ({pooler(cfg, m.PGBOUNCER_DB_POOL_SIZE)})",
                "{{pooler}} {{database}} pool_size",
            ),
        ],
        stacked=True,
        overrides=[_override(".* pool_size$", "red", dashed=True)],
    )
    max_conn = f"max({database(cfg, m.DATABASE_MAX_CONNECTIONS)})"
    db = timeseries(
        "4. Database: connections by state",
        "What reaches the database: its client connections by state against max_connections. "
        "Behind a pooler in transaction mode this stays near the pooler's pool size however "
        "busy the fleet; in session mode it follows the fleet's open connections.",
        "short",
        [
            Query(
                f"max by (database, state) (sum without (application_name) "
                f"({database(cfg, m.DATABASE_CONNECTIONS)}))",
                "{{database}} {{state}}",
            ),
            Query(max_conn, "max_connections"),
        ],
        stacked=True,
        overrides=[_override("^max_connections$", "red", dashed=True)],
    )
    wait = timeseries(
        "Oldest client waiting in the pooler",
        "How long the oldest client queued in each pooler pool has waited (maxwait and "
        "maxwait_us together, so waits under a second show), against the applications' "
        "pool timeout (dashed): a client waiting here holds an application connection.",
        "s",
        [
            Query(
                f"max by (pooler, database, user) ({pooler(cfg, m.PGBOUNCER_MAXWAIT)})",
                "{{pooler}} {{database}}/{{user}}",
            ),
            Query(f"min({fleet(cfg, m.TIMEOUT)})", "pool timeout"),
        ],
        overrides=[_override("^pool timeout$", "red", dashed=True)],
    )
    up = stat(
        "Poolers reachable",
        "Whether every pooler's admin console answered the sidecar at its last scrape.",
        "bool_yes_no",
        Query(f"min({pooler(cfg, m.PGBOUNCER_UP)})", "up"),
        [{"color": "red", "value": None}, {"color": "green", "value": 1}],
    )
    return "Through the pooler (PgBouncer)", [
        (fleet_pools, 6, 9),
        (clients, 6, 9),
        (servers, 6, 9),
        (db, 6, 9),
        (wait, 18, 7),
        (up, 6, 7),
    ]


def held(cfg: DashboardConfig) -> Row:
    by = "job, instance, pool, pid"
    oldest = timeseries(
        "Oldest checkout age vs pool timeout",
        "How long the connection out longest has been out, per pool and worker, against the "
        "pool timeout (red dashed): a leak climbs in a straight line and never drops; a slow "
        "query climbs and falls back when it finishes.",
        "s",
        [
            Query(f"max by ({by}) ({gauge(cfg, m.OLDEST_CHECKOUT)})", WORKER),
            Query(f"max by (pool) ({gauge(cfg, m.TIMEOUT)})", "timeout {{pool}}"),
        ],
        overrides=[_override("^timeout .*", "red", dashed=True)],
    )
    long = timeseries(
        "Long checkouts and leaked connections",
        "Checkouts per second held past the application's long_checkout_threshold, and "
        "connections the garbage collector returned because the application never closed them; "
        "the application log names where they were borrowed.",
        "ops",
        [
            Query(_rate(cfg, m.LONG_CHECKOUTS), "long {{pool}}"),
            Query(_rate(cfg, m.GC_RETURNED), "leaked {{pool}}"),
        ],
        steps=_steps(None, 0.001),
        threshold_style="line",
    )
    return "Held connections", [(oldest, 12, 8), (long, 12, 8)]


ROWS = (saturation, latency, errors, churn, held, database_and_fleet, through_the_pooler)


# -- variables and annotations --------------------------------------------------------------


def _query_variable(name: str, label: str, query: str) -> g.Template:
    return g.Template(
        name=name,
        label=label,
        query=query,
        dataSource=DATASOURCE,
        includeAll=True,
        multi=True,
        allValue=ALL_VALUE,
        refresh=g.REFRESH_ON_TIME_RANGE_CHANGE,
        sort=g.SORT_ALPHA_IGNORE_CASE_ASC,
    )


def variables(cfg: DashboardConfig) -> list[g.Template]:
    extra = [cfg.selector] if cfg.selector else []
    job = 'job=~"$job"'
    instance = 'instance=~"$instance"'

    def values_of(label: str, *matchers: str) -> str:
        return f"label_values({_series(m.INFO.sample, [*matchers, *extra])}, {label})"

    return [
        g.Template(
            name=DATASOURCE_VARIABLE, label="Data source", query="prometheus", type="datasource"
        ),
        _query_variable("job", "Job", values_of("job")),
        _query_variable("instance", "Instance", values_of("instance", job)),
        _query_variable("pool", "Pool", values_of("pool", job, instance)),
        _query_variable("worker", "Worker (pid)", values_of("pid", job, instance, 'pool=~"$pool"')),
    ]


def annotation_queries(cfg: DashboardConfig) -> list[dict[str, Any]]:
    events = _series(m.EVENT_LAST_TIMESTAMP.sample, _matchers(cfg, pool=False))
    alerts = _series("ALERTS", ['alertstate="firing"', 'job=~"$job"'])
    return [
        {
            "builtIn": 1,
            "datasource": GRAFANA_DATASOURCE,
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        },
        {
            "datasource": DATASOURCE,
            "enable": True,
            "expr": f"max by (event) ({events}) * 1000",
            "hide": False,
            "iconColor": "purple",
            "name": "Marked events",
            "step": "15s",
            "tagKeys": "event",
            "textFormat": "marked with pool_exporter.mark_event()",
            "titleFormat": "{{event}}",
            # The value is the event's own time (ms), so the mark sits where it happened
            # rather than at the next scrape or evaluation step.
            "useValueForTime": True,
        },
        {
            "datasource": DATASOURCE,
            "enable": True,
            "expr": alerts,
            "hide": False,
            "iconColor": "red",
            "name": "Alerts firing",
            "step": "15s",
            "tagKeys": "alertname,severity",
            "textFormat": "{{severity}} {{pool}} {{instance}}",
            "titleFormat": "{{alertname}}",
            "useValueForTime": False,
        },
    ]


# -- assembling -----------------------------------------------------------------------------


def _layout(rows: Sequence[Row]) -> list[g.Panel]:
    """Rows of panels, left to right, wrapping at Grafana's 24 columns."""
    panels: list[g.Panel] = []
    y = 0
    for title, items in rows:
        panels.append(g.RowPanel(title=title, gridPos=g.GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x, line_height = 0, 0
        for panel, w, h in items:
            if x + w > 24:
                y, x, line_height = y + line_height, 0, 0
            panel.gridPos = g.GridPos(h=h, w=w, x=x, y=y)
            x += w
            line_height = max(line_height, h)
        y += line_height
        panels.extend(p for p, _, _ in items)
    return panels


def build(cfg: DashboardConfig) -> g.Dashboard:
    """The dashboard as grafanalib objects."""
    return g.Dashboard(
        title=cfg.title,
        uid=cfg.uid,
        description="SQLAlchemy connection pools exported by pool-exporter: saturation, "
        "latency, errors, churn, and the database they share.",
        tags=list(cfg.tags),
        timezone="browser",
        refresh=cfg.refresh,
        time=g.Time(cfg.time_from, "now"),
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        schemaVersion=SCHEMA_VERSION,
        templating=g.Templating(list=variables(cfg)),
        annotations=g.Annotations(list=annotation_queries(cfg)),
        panels=_layout([row(cfg) for row in ROWS]),
    ).auto_panel_ids()


# Keys grafanalib writes that schema 39 no longer has (or that only mean something in the
# Angular panels), dropped so the JSON is what Grafana itself would save.
_DROP_DASHBOARD = ("__inputs", "rows", "hideControls", "sharedCrosshair", "style", "gnetId")
_DROP_PANEL = (
    "cacheTimeout",
    "editable",
    "error",
    "height",
    "hideTimeOverride",
    "minSpan",
    "span",
    "maxPerRow",
    "repeatDirection",
    "maxDataPoints",  # grafanalib's 100 would coarsen every graph; Grafana uses the width
)
_DROP_PANEL_IF_EMPTY = ("repeat", "timeFrom", "timeShift", "interval")
_ROW_KEYS = ("collapsed", "gridPos", "id", "panels", "title", "type")
_DROP_VARIABLE = ("useTags", "tagsQuery", "tagValuesQuery", "auto", "auto_min", "auto_count")


def to_json_data(cfg: DashboardConfig) -> dict[str, Any]:
    """The dashboard as Grafana 10/11 import it."""
    data: dict[str, Any] = json.loads(json.dumps(build(cfg), cls=DashboardEncoder))
    for key in _DROP_DASHBOARD:
        data.pop(key, None)
    data.update(
        fiscalYearStartMonth=0,
        liveNow=False,
        weekStart="",
        timepicker={"refresh_intervals": ["10s", "30s", "1m", "5m", "15m", "1h"]},
    )
    for panel in _walk_panels(data["panels"]):
        _tidy_panel(panel)
    for variable in data["templating"]["list"]:
        _tidy_variable(variable)
    return data


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def _tidy_panel(panel: dict[str, Any]) -> None:
    for key in _DROP_PANEL:
        panel.pop(key, None)
    for key in _DROP_PANEL_IF_EMPTY:
        if not panel.get(key):
            panel.pop(key, None)
    if panel["type"] == "row":
        for key in set(panel) - set(_ROW_KEYS):
            del panel[key]
        return
    panel.setdefault("pluginVersion", PLUGIN_VERSION)
    legend = panel.get("options", {}).get("legend")
    if isinstance(legend, dict) and "displayMode" in legend:
        legend["showLegend"] = legend["displayMode"] != "hidden"  # schema 37
    defaults = panel["fieldConfig"]["defaults"]
    if not defaults.get("thresholds", {}).get("steps"):
        defaults["thresholds"] = {"mode": "absolute", "steps": _steps()}
    for key in ("min", "max", "decimals"):
        if defaults.get(key) is None:
            defaults.pop(key, None)
    custom = defaults.get("custom", {})
    for key in ("axisSoftMin", "axisSoftMax"):
        if custom.get(key) is None:
            custom.pop(key, None)
    scale = custom.get("scaleDistribution", {})
    if scale.get("type") == "linear":
        scale.pop("log", None)
    if defaults.get("color") is None:
        defaults["color"] = {"mode": "thresholds"}


def _tidy_variable(variable: dict[str, Any]) -> None:
    for key in _DROP_VARIABLE:
        variable.pop(key, None)
    variable["current"] = {}  # Grafana picks the first option (or All) on load
    variable["skipUrlSync"] = False
    if variable["type"] == "datasource":
        for key in ("datasource", "allValue", "tags"):
            variable.pop(key, None)
        variable["regex"] = ""
        return
    variable["definition"] = variable["query"]
    variable["regex"] = ""


def render(cfg: DashboardConfig) -> str:
    """The committed text: sorted keys, two-space indent, one trailing newline."""
    return json.dumps(to_json_data(cfg), sort_keys=True, indent=2) + "\n"


def generate(cfg: DashboardConfig, out_dir: Path) -> dict[Path, str]:
    """{path: text} of every dashboard file the config produces."""
    return {out_dir / cfg.filename: render(cfg)}
