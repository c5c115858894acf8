"""The Prometheus recording and alerting rules, built from an `AlertConfig`.

Records and the alerts that read them share a group: a group evaluates its rules in order,
so an alert sees the records of the same evaluation instead of the previous one, which would
cost a whole interval in a push that saturates a pool within one scrape.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pool_exporter import metrics as m

from .config import AlertConfig

Rule = dict[str, Any]
Group = dict[str, Any]

# Where an alert is: pool, worker (the `pid` gauges carry in multiprocess mode), instance.
WHERE = (
    "pool {{ $labels.pool }} on {{ $labels.instance }}"
    "{{ if $labels.pid }} (worker {{ $labels.pid }}){{ end }}"
)
WHERE_INSTANCE = "pool {{ $labels.pool }} on {{ $labels.instance }}"


@dataclass(frozen=True)
class RecordNames:
    """Recording rule names (`level:metric:operations`), for the alerts and the dashboards."""

    utilisation: str
    utilisation_avg: str
    hold_mean: str
    queue_drain: str
    wait_p99: str
    fleet_capacity: str
    database_available: str
    fleet_database_ratio: str
    database_used_ratio: str


def record_names(cfg: AlertConfig) -> RecordNames:
    w = cfg.rate_window
    fleet = "_".join(cfg.fleet_labels)
    return RecordNames(
        utilisation="pool:sqlalchemy_pool_utilisation:ratio",
        utilisation_avg=f"pool:sqlalchemy_pool_utilisation:avg_over_time{w}",
        hold_mean=f"pool:{m.HOLD.name}:mean_rate{w}",
        queue_drain=f"pool:{m.WAITING.name}:drain_seconds",
        wait_p99=f"pool:{m.CHECKOUT_WAIT.name}:p99_rate{w}",
        fleet_capacity=f"{fleet}:{m.MAX_CONNECTIONS.name}:sum",
        database_available=f"{fleet}:pool_exporter_database_available_connections:max",
        fleet_database_ratio=f"{fleet}:{m.MAX_CONNECTIONS.name}:database_ratio",
        database_used_ratio=f"{fleet}:{m.DATABASE_CONNECTIONS.name}:ratio",
    )


def selector(name: str, *matchers: str) -> str:
    found = [x for x in matchers if x]
    return f"{name}{{{','.join(found)}}}" if found else name


@dataclass(frozen=True)
class Builder:
    """PromQL pieces for one config."""

    cfg: AlertConfig

    def pool(self, metric: m.Metric, *matchers: str, suffix: str = "") -> str:
        return selector(metric.sample + suffix, *matchers, self.cfg.selector)

    def database(self, metric: m.Metric) -> str:
        return selector(metric.sample, self.cfg.database_selector)

    @property
    def by_fleet(self) -> str:
        return f"by ({', '.join(self.cfg.fleet_labels)})"

    def rate(self, metric: m.Metric, window: str, suffix: str = "") -> str:
        # prometheus-client sums counters across workers; the `without (pid)` keeps this
        # right should a deployment's exporter not.
        return f"sum without (pid) (rate({self.pool(metric, suffix=suffix)}[{window}]))"


def alert(  # noqa: PLR0917 - read as a table of rules, one argument a line
    cfg: AlertConfig,
    name: str,
    expr: str,
    severity: str,
    summary: str,
    description: str,
    for_: str = "0s",
) -> Rule:
    rule: Rule = {"alert": name, "expr": expr}
    if for_ not in ("0s", "0m"):
        rule["for"] = for_
    rule["labels"] = {"severity": severity}
    rule["annotations"] = {
        "summary": summary,
        "description": description,
        "runbook_url": f"{cfg.runbook_url}#{name.lower()}",
    }
    return rule


def pool_group(cfg: AlertConfig) -> Group:
    b, r = Builder(cfg), record_names(cfg)
    w = cfg.rate_window
    in_use = b.pool(m.CONNECTIONS, 'state="in_use"')
    capacity = f"({b.pool(m.MAX_CONNECTIONS)} > 0)"
    timeout = f"({b.pool(m.TIMEOUT)} > 0)"
    waiting = b.pool(m.WAITING)
    hold_sum = b.rate(m.HOLD, w, "_sum")
    hold_count = b.rate(m.HOLD, w, "_count")
    records: list[Rule] = [
        {"record": r.utilisation, "expr": f"{in_use} / ignoring (state) {capacity}"},
        {"record": r.utilisation_avg, "expr": f"avg_over_time({r.utilisation}[{w}])"},
        {"record": r.hold_mean, "expr": f"{hold_sum} / {hold_count}"},
        # How long the callers queued now wait to be served: each needs one of `capacity`
        # connections for the recent mean hold time. Histograms carry no pid, gauges may.
        {
            "record": r.queue_drain,
            "expr": f"{waiting} * ignoring (pid) group_left () {r.hold_mean} / {capacity}",
        },
        {
            "record": r.wait_p99,
            "expr": f"histogram_quantile(0.99, {b.rate(m.CHECKOUT_WAIT, w, '_bucket')})",
        },
    ]
    sev_w, sev_p = cfg.severity_warning, cfg.severity_page
    busy = f"{r.utilisation} >= {cfg.utilisation_warning:g}"
    failed = b.rate(m.CONNECT_ERRORS, cfg.error_window)
    alerts = [
        alert(
            cfg,
            "SQLAlchemyPoolNearlyFull",
            busy,
            sev_w,
            "A connection pool is nearly full.",
            f"{WHERE} has had {{{{ $value | humanizePercentage }}}} of its connections in use "
            f"for {cfg.nearly_full_for}: the next burst will make callers wait.",
            cfg.nearly_full_for,
        ),
        alert(
            cfg,
            "SQLAlchemyPoolExhausted",
            f"{r.queue_drain} >= {cfg.queue_warning_seconds:g} and {busy}",
            sev_w,
            "A connection pool is exhausted: callers are queueing for a connection.",
            f"{WHERE} is full and the callers queued for a connection need about "
            "{{ $value | humanizeDuration }} to be served at the recent hold time.",
        ),
        alert(
            cfg,
            "SQLAlchemyPoolCallersWaiting",
            f"{waiting} > 0 and {r.utilisation} >= 1",
            sev_w,
            "Callers have been waiting for a full connection pool.",
            f"{WHERE} has been at capacity with callers waiting for {cfg.waiting_for}; "
            "{{ $value }} are waiting now.",
            cfg.waiting_for,
        ),
        alert(
            cfg,
            "SQLAlchemyPoolQueueExceedsTimeout",
            f"{r.queue_drain} / {timeout} >= {cfg.queue_timeout_share:g} and {busy}",
            sev_p,
            "Callers queued for a connection pool are about to hit the pool timeout.",
            f"{WHERE} is full and its queue needs {{{{ $value | humanizePercentage }}}} of the "
            "pool timeout to drain: its last callers will fail with TimeoutError.",
        ),
        alert(
            cfg,
            "SQLAlchemyPoolQueueNearTimeout",
            f"{r.queue_drain} / {timeout} >= {cfg.queue_page_share:g} and {busy}",
            sev_p,
            "Callers queued for a connection pool will soon hit the pool timeout.",
            f"{WHERE} is full and its queue needs {{{{ $value | humanizePercentage }}}} of the "
            "pool timeout to drain: checkouts will fail with TimeoutError unless load drops.",
            cfg.page_for,
        ),
        alert(
            cfg,
            "SQLAlchemyPoolCheckoutWaitNearTimeout",
            f"{r.wait_p99} / max without (pid) {timeout} >= {cfg.wait_page_share:g} "
            f"and ignoring (pid) {waiting} > 0",
            sev_p,
            "Checkouts wait a large share of the pool timeout.",
            f"{WHERE_INSTANCE}: the 99th percentile checkout over {w} waited "
            "{{ $value | humanizePercentage }} of the pool timeout and callers are still "
            "waiting.",
            cfg.page_for,
        ),
        alert(
            cfg,
            "SQLAlchemyPoolCheckoutTimeouts",
            f"{b.rate(m.CHECKOUT_TIMEOUTS, w)} > 0",
            sev_p,
            "Checkouts are failing with the pool's TimeoutError.",
            f"{WHERE_INSTANCE}: {{{{ $value | humanize }}}} checkouts/s timed out over the "
            f"last {w}; the application is returning errors.",
        ),
        alert(
            cfg,
            "SQLAlchemyPoolHeadroomLow",
            f"max without (pid) (max_over_time({r.utilisation_avg}[{cfg.headroom_window}])) "
            f">= {cfg.headroom_threshold:g}",
            cfg.severity_ticket,
            "A connection pool has little headroom for the next burst.",
            f"{WHERE_INSTANCE}: its busiest {w} in the last {cfg.headroom_window} averaged "
            "{{ $value | humanizePercentage }} of capacity. Raise the pool (or the workers) "
            "before the next push.",
        ),
        alert(
            cfg,
            "SQLAlchemyPoolConnectErrors",
            f"{failed} / ({b.rate(m.CONNECTS, cfg.error_window)} + {failed}) "
            f">= {cfg.connect_error_share:g}",
            sev_w,
            "A connection pool cannot open database connections.",
            f"{WHERE_INSTANCE}: {{{{ $value | humanizePercentage }}}} of the attempts to open "
            f"a connection failed over the last {cfg.error_window}.",
            cfg.connect_errors_for,
        ),
        alert(
            cfg,
            "SQLAlchemyPoolInvalidationStorm",
            f"sum without (pid, soft) (increase({b.pool(m.INVALIDATIONS)}[{cfg.error_window}])) "
            f"/ sum without (pid) {capacity} >= {cfg.invalidation_share:g}",
            sev_w,
            "A connection pool is invalidating many connections.",
            f"{WHERE_INSTANCE}: connections amounting to {{{{ $value | humanizePercentage }}}} "
            f"of the pool's capacity were invalidated over the last {cfg.error_window} "
            "(database restart, failover or network trouble).",
        ),
    ]
    return {"name": "sqlalchemy-pool", "rules": records + alerts}


def fleet_group(cfg: AlertConfig) -> Group:
    b, r = Builder(cfg), record_names(cfg)
    by = b.by_fleet
    conn_labels = ", ".join(m.DATABASE_CONNECTIONS.labels)
    where = " ".join(f"{{{{ $labels.{label} }}}}" for label in cfg.fleet_labels)
    records: list[Rule] = [
        {"record": r.fleet_capacity, "expr": f"sum {by} ({b.pool(m.MAX_CONNECTIONS)})"},
        # Every sidecar reports the same server: max, not sum, across sidecars.
        {
            "record": r.database_available,
            "expr": f"max {by} ({b.database(m.DATABASE_MAX_CONNECTIONS)}) "
            f"- max {by} ({b.database(m.DATABASE_RESERVED_CONNECTIONS)})",
        },
        {"record": r.fleet_database_ratio, "expr": f"{r.fleet_capacity} / {r.database_available}"},
        {
            "record": r.database_used_ratio,
            "expr": f"max {by} (sum without ({conn_labels}) "
            f"({b.database(m.DATABASE_CONNECTIONS)})) / {r.database_available}",
        },
    ]
    alerts = [
        alert(
            cfg,
            "SQLAlchemyFleetExceedsDatabaseLimit",
            f"{r.fleet_database_ratio} > {cfg.fleet_share:g}",
            cfg.severity_warning,
            "The pools together may open more connections than the database allows.",
            f"The pools of {where} may open {{{{ $value | humanizePercentage }}}} of the "
            "connections the database allows ordinary roles (max_connections minus reserved): "
            "under load, new connections will be refused.",
            cfg.fleet_for,
        ),
        alert(
            cfg,
            "PoolExporterDatabaseConnectionsNearLimit",
            f"{r.database_used_ratio} >= {cfg.database_warning:g}",
            cfg.severity_warning,
            "The database is running out of connection slots.",
            f"The database of {where} has {{{{ $value | humanizePercentage }}}} of the "
            "connection slots for ordinary roles in use.",
            cfg.database_warning_for,
        ),
        alert(
            cfg,
            "PoolExporterDatabaseConnectionsExhausted",
            f"{r.database_used_ratio} >= {cfg.database_critical:g}",
            cfg.severity_page,
            "The database is out of connection slots.",
            f"The database of {where} has {{{{ $value | humanizePercentage }}}} of the "
            "connection slots for ordinary roles in use: new connections are being refused.",
            cfg.database_critical_for,
        ),
        alert(
            cfg,
            "PoolExporterDatabaseDown",
            f"{b.database(m.DATABASE_UP)} == 0",
            cfg.severity_warning,
            "The sidecar cannot query the database.",
            "The sidecar {{ $labels.instance }} of {{ $labels.job }} has not been able to "
            f"query the database for {cfg.database_down_for}.",
            cfg.database_down_for,
        ),
    ]
    return {"name": "pool-exporter-fleet", "rules": records + alerts}


def pgbouncer_group(cfg: AlertConfig) -> Group:
    """The pooler between the pools and the database: its queue, its client limit, and
    whether it protects the database at all (session pooling does not)."""
    b = Builder(cfg)
    fleet = ", ".join(cfg.fleet_labels)
    where = " ".join(f"{{{{ $labels.{label} }}}}" for label in cfg.fleet_labels)

    def bouncer(metric: m.Metric, *matchers: str) -> str:
        return selector(metric.sample, *matchers, cfg.pgbouncer_selector)

    pool = "pooler {{ $labels.pooler }} ({{ $labels.database }}/{{ $labels.user }})"
    maxwait = bouncer(m.PGBOUNCER_MAXWAIT)
    waiting = bouncer(m.PGBOUNCER_CLIENTS, 'state="waiting"')
    # Every server connection the pool has, whatever it is doing: `used` and `tested` ones
    # are being reset or checked and serve no client either.
    servers = f"sum without (state) ({bouncer(m.PGBOUNCER_SERVERS)})"
    pool_size = bouncer(m.PGBOUNCER_DB_POOL_SIZE)
    timeout = f"min by ({fleet}) ({selector(m.TIMEOUT.sample, cfg.selector)} > 0)"
    used = bouncer(m.PGBOUNCER_LIST_ITEMS, 'list="used_clients"')
    session = selector(m.PGBOUNCER_DB_INFO.sample, 'pool_mode="session"', cfg.pgbouncer_selector)
    # Computed here rather than read from the fleet group's records: a group only sees its
    # own records of the same evaluation, another group's may be one evaluation old.
    capacity = f"sum by ({fleet}) ({b.pool(m.MAX_CONNECTIONS)})"
    available = (
        f"(max by ({fleet}) ({b.database(m.DATABASE_MAX_CONNECTIONS)}) "
        f"- max by ({fleet}) ({b.database(m.DATABASE_RESERVED_CONNECTIONS)}))"
    )
    sev_w = cfg.severity_warning
    alerts = [
        alert(
            cfg,
            "PgBouncerPoolSaturated",
            f"{maxwait} >= {cfg.pooler_wait_warning_seconds:g} "
            f"and ignoring (state) {waiting} > 0 "
            f"and {servers} >= ignoring (user) group_left () ({pool_size} > 0)",
            sev_w,
            "Clients are queueing in the pooler for a server connection.",
            f"{pool} has every one of its server connections in use and its oldest waiting "
            "client has waited {{ $value | humanizeDuration }}: the pooler's pool size, not "
            "the applications' pools, is what limits this database now.",
            cfg.page_for,
        ),
        alert(
            cfg,
            "PgBouncerWaitNearPoolTimeout",
            f"max by ({fleet}, pooler, database, user) ({maxwait}) "
            f"/ on ({fleet}) group_left () {timeout} >= {cfg.pooler_wait_page_share:g}",
            cfg.severity_page,
            "Clients wait in the pooler for a large share of the applications' pool timeout.",
            f"The oldest client of {pool} has waited {{{{ $value | humanizePercentage }}}} of "
            "the applications' pool timeout: each holds an application connection while it "
            "waits, so callers queued behind it in the pools will hit TimeoutError.",
            cfg.page_for,
        ),
        alert(
            cfg,
            "PgBouncerClientConnectionsNearLimit",
            f"{used} / ignoring (list) ({bouncer(m.PGBOUNCER_MAX_CLIENT_CONN)} > 0) "
            f">= {cfg.pooler_clients_warning:g}",
            sev_w,
            "The pooler is running out of client connections.",
            "Pooler {{ $labels.pooler }} on {{ $labels.instance }} has "
            "{{ $value | humanizePercentage }} of max_client_conn in use: past it, new "
            "connections from the pools are refused.",
            cfg.pooler_clients_for,
        ),
        alert(
            cfg,
            "PgBouncerFleetExceedsMaxClientConn",
            f"{capacity} / on ({fleet}) "
            f"sum by ({fleet}) ({bouncer(m.PGBOUNCER_MAX_CLIENT_CONN)}) > {cfg.fleet_share:g}",
            sev_w,
            "The pools together may open more connections than the poolers accept.",
            f"The pools of {where} may open {{{{ $value | humanizePercentage }}}} of the client "
            "connections their poolers accept (max_client_conn): under load, new connections "
            "will be refused.",
            cfg.fleet_for,
        ),
        alert(
            cfg,
            "PgBouncerSessionModeFleetExceedsDatabase",
            f"{capacity} / {available} > {cfg.fleet_share:g} "
            f"and on ({fleet}) group by ({fleet}) ({session})",
            sev_w,
            "A pooler in session mode does not protect the database from the fleet.",
            f"The pools of {where} may open {{{{ $value | humanizePercentage }}}} of the "
            "connections the database allows ordinary roles, and their pooler runs in session "
            "mode, which gives every client connection a server connection of its own.",
            cfg.fleet_for,
        ),
    ]
    return {"name": "pool-exporter-pgbouncer", "rules": alerts}


def absent_group(cfg: AlertConfig) -> Group:
    info = selector(m.INFO.sample, cfg.selector)
    # A target still in service discovery (it has `up`) that reported pools within the
    # lookback and reports none now: down, or no longer instrumented. A target that was
    # removed (scaled down, replaced) has no `up` and stays quiet.
    expr = (
        f"(group by (job, instance) (max_over_time({info}[{cfg.absent_lookback}])) "
        f"unless on (job, instance) {info}) and on (job, instance) up"
    )
    rule = alert(
        cfg,
        "SQLAlchemyPoolMetricsAbsent",
        expr,
        cfg.severity_warning,
        "Pool metrics have disappeared.",
        "{{ $labels.instance }} of {{ $labels.job }} reported connection pool metrics in "
        f"the last {cfg.absent_lookback} and has reported none for {cfg.absent_for}: the "
        "pools are not watched.",
        cfg.absent_for,
    )
    return {"name": "pool-exporter-absent", "rules": [rule]}


def groups(cfg: AlertConfig) -> list[Group]:
    return [pool_group(cfg), fleet_group(cfg), absent_group(cfg), pgbouncer_group(cfg)]
