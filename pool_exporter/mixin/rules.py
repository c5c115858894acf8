"""The Prometheus recording and alerting rules, built from an `AlertConfig`.

Records and the alerts that read them share a group: a group evaluates its rules in order,
so an alert sees the records of the same evaluation instead of the previous one, which would
cost a whole interval in a push that saturates a pool within one scrape.
"""

from __future__ import annotations

from collections.abc import Callable
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


# -- one pool in one worker ------------------------------------------------------------------
# An alert is a small function of the shared terms, listed in its group's tuple: a new alert
# is a new function and one more line in a tuple.


@dataclass(frozen=True)
class PoolTerms:
    """The selectors and conditions the pool records and alerts share."""

    cfg: AlertConfig
    build: Builder
    names: RecordNames
    in_use: str
    capacity: str  # max connections, where the pool has a capacity
    timeout: str  # the pool timeout, where it has one
    waiting: str
    busy: str  # utilisation at or above the warning threshold

    @classmethod
    def of(cls, cfg: AlertConfig) -> PoolTerms:
        b, r = Builder(cfg), record_names(cfg)
        return cls(
            cfg=cfg,
            build=b,
            names=r,
            in_use=b.pool(m.CONNECTIONS, 'state="in_use"'),
            capacity=f"({b.pool(m.MAX_CONNECTIONS)} > 0)",
            timeout=f"({b.pool(m.TIMEOUT)} > 0)",
            waiting=b.pool(m.WAITING),
            busy=f"{r.utilisation} >= {cfg.utilisation_warning:g}",
        )


def pool_records(t: PoolTerms) -> list[Rule]:
    b, r, w = t.build, t.names, t.cfg.rate_window
    hold_sum = b.rate(m.HOLD, w, "_sum")
    hold_count = b.rate(m.HOLD, w, "_count")
    return [
        {"record": r.utilisation, "expr": f"{t.in_use} / ignoring (state) {t.capacity}"},
        {"record": r.utilisation_avg, "expr": f"avg_over_time({r.utilisation}[{w}])"},
        {"record": r.hold_mean, "expr": f"{hold_sum} / {hold_count}"},
        # How long the callers queued now wait to be served: each needs one of `capacity`
        # connections for the recent mean hold time. Histograms carry no pid, gauges may.
        {
            "record": r.queue_drain,
            "expr": f"{t.waiting} * ignoring (pid) group_left () {r.hold_mean} / {t.capacity}",
        },
        {
            "record": r.wait_p99,
            "expr": f"histogram_quantile(0.99, {b.rate(m.CHECKOUT_WAIT, w, '_bucket')})",
        },
    ]


def nearly_full(t: PoolTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolNearlyFull",
        t.busy,
        cfg.severity_warning,
        "A connection pool is nearly full.",
        f"{WHERE} has had {{{{ $value | humanizePercentage }}}} of its connections in use "
        f"for {cfg.nearly_full_for}: the next burst will make callers wait.",
        cfg.nearly_full_for,
    )


def exhausted(t: PoolTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolExhausted",
        f"{t.names.queue_drain} >= {cfg.queue_warning_seconds:g} and {t.busy}",
        cfg.severity_warning,
        "A connection pool is exhausted: callers are queueing for a connection.",
        f"{WHERE} is full and the callers queued for a connection need about "
        "{{ $value | humanizeDuration }} to be served at the recent hold time.",
    )


def callers_waiting(t: PoolTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolCallersWaiting",
        f"{t.waiting} > 0 and {t.names.utilisation} >= 1",
        cfg.severity_warning,
        "Callers have been waiting for a full connection pool.",
        f"{WHERE} has been at capacity with callers waiting for {cfg.waiting_for}; "
        "{{ $value }} are waiting now.",
        cfg.waiting_for,
    )


def queue_exceeds_timeout(t: PoolTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolQueueExceedsTimeout",
        f"{t.names.queue_drain} / {t.timeout} >= {cfg.queue_timeout_share:g} and {t.busy}",
        cfg.severity_page,
        "Callers queued for a connection pool are about to hit the pool timeout.",
        f"{WHERE} is full and its queue needs {{{{ $value | humanizePercentage }}}} of the "
        "pool timeout to drain: its last callers will fail with TimeoutError.",
    )


def queue_near_timeout(t: PoolTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolQueueNearTimeout",
        f"{t.names.queue_drain} / {t.timeout} >= {cfg.queue_page_share:g} and {t.busy}",
        cfg.severity_page,
        "Callers queued for a connection pool will soon hit the pool timeout.",
        f"{WHERE} is full and its queue needs {{{{ $value | humanizePercentage }}}} of the "
        "pool timeout to drain: checkouts will fail with TimeoutError unless load drops.",
        cfg.page_for,
    )


def checkout_wait_near_timeout(t: PoolTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolCheckoutWaitNearTimeout",
        f"{t.names.wait_p99} / max without (pid) {t.timeout} >= {cfg.wait_page_share:g} "
        f"and ignoring (pid) {t.waiting} > 0",
        cfg.severity_page,
        "Checkouts wait a large share of the pool timeout.",
        f"{WHERE_INSTANCE}: the 99th percentile checkout over {cfg.rate_window} waited "
        "{{ $value | humanizePercentage }} of the pool timeout and callers are still "
        "waiting.",
        cfg.page_for,
    )


def checkout_timeouts(t: PoolTerms) -> Rule:
    cfg, w = t.cfg, t.cfg.rate_window
    return alert(
        cfg,
        "SQLAlchemyPoolCheckoutTimeouts",
        f"{t.build.rate(m.CHECKOUT_TIMEOUTS, w)} > 0",
        cfg.severity_page,
        "Checkouts are failing with the pool's TimeoutError.",
        f"{WHERE_INSTANCE}: {{{{ $value | humanize }}}} checkouts/s timed out over the "
        f"last {w}; the application is returning errors.",
    )


def headroom_low(t: PoolTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolHeadroomLow",
        f"max without (pid) (max_over_time({t.names.utilisation_avg}[{cfg.headroom_window}])) "
        f">= {cfg.headroom_threshold:g}",
        cfg.severity_ticket,
        "A connection pool has little headroom for the next burst.",
        f"{WHERE_INSTANCE}: its busiest {cfg.rate_window} in the last {cfg.headroom_window} "
        "averaged {{ $value | humanizePercentage }} of capacity. Raise the pool (or the "
        "workers) before the next push.",
    )


def connect_errors(t: PoolTerms) -> Rule:
    cfg = t.cfg
    failed = t.build.rate(m.CONNECT_ERRORS, cfg.error_window)
    return alert(
        cfg,
        "SQLAlchemyPoolConnectErrors",
        f"{failed} / ({t.build.rate(m.CONNECTS, cfg.error_window)} + {failed}) "
        f">= {cfg.connect_error_share:g}",
        cfg.severity_warning,
        "A connection pool cannot open database connections.",
        f"{WHERE_INSTANCE}: {{{{ $value | humanizePercentage }}}} of the attempts to open "
        f"a connection failed over the last {cfg.error_window}.",
        cfg.connect_errors_for,
    )


def invalidation_storm(t: PoolTerms) -> Rule:
    cfg = t.cfg
    invalidated = f"increase({t.build.pool(m.INVALIDATIONS)}[{cfg.error_window}])"
    return alert(
        cfg,
        "SQLAlchemyPoolInvalidationStorm",
        f"sum without (pid, soft) ({invalidated}) "
        f"/ sum without (pid) {t.capacity} >= {cfg.invalidation_share:g}",
        cfg.severity_warning,
        "A connection pool is invalidating many connections.",
        f"{WHERE_INSTANCE}: connections amounting to {{{{ $value | humanizePercentage }}}} "
        f"of the pool's capacity were invalidated over the last {cfg.error_window} "
        "(database restart, failover or network trouble).",
    )


POOL_ALERTS: tuple[Callable[[PoolTerms], Rule], ...] = (
    nearly_full,
    exhausted,
    callers_waiting,
    queue_exceeds_timeout,
    queue_near_timeout,
    checkout_wait_near_timeout,
    checkout_timeouts,
    headroom_low,
    connect_errors,
    invalidation_storm,
)


def pool_group(cfg: AlertConfig) -> Group:
    t = PoolTerms.of(cfg)
    return {"name": "sqlalchemy-pool", "rules": pool_records(t) + [a(t) for a in POOL_ALERTS]}


# -- the fleet of pools against the database they share -------------------------------------


@dataclass(frozen=True)
class FleetTerms:
    """What the fleet records and alerts share: one database's clients, named by
    `fleet_labels`."""

    cfg: AlertConfig
    build: Builder
    names: RecordNames
    where: str  # the fleet's label values, for descriptions

    @classmethod
    def of(cls, cfg: AlertConfig) -> FleetTerms:
        where = " ".join(f"{{{{ $labels.{label} }}}}" for label in cfg.fleet_labels)
        return cls(cfg=cfg, build=Builder(cfg), names=record_names(cfg), where=where)


def fleet_records(t: FleetTerms) -> list[Rule]:
    b, r, by = t.build, t.names, t.build.by_fleet
    conn_labels = ", ".join(m.DATABASE_CONNECTIONS.labels)
    return [
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


def fleet_exceeds_database_limit(t: FleetTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyFleetExceedsDatabaseLimit",
        f"{t.names.fleet_database_ratio} > {cfg.fleet_share:g}",
        cfg.severity_warning,
        "The pools together may open more connections than the database allows.",
        f"The pools of {t.where} may open {{{{ $value | humanizePercentage }}}} of the "
        "connections the database allows ordinary roles (max_connections minus reserved): "
        "under load, new connections will be refused.",
        cfg.fleet_for,
    )


def database_connections_near_limit(t: FleetTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PoolExporterDatabaseConnectionsNearLimit",
        f"{t.names.database_used_ratio} >= {cfg.database_warning:g}",
        cfg.severity_warning,
        "The database is running out of connection slots.",
        f"The database of {t.where} has {{{{ $value | humanizePercentage }}}} of the "
        "connection slots for ordinary roles in use.",
        cfg.database_warning_for,
    )


def database_connections_exhausted(t: FleetTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PoolExporterDatabaseConnectionsExhausted",
        f"{t.names.database_used_ratio} >= {cfg.database_critical:g}",
        cfg.severity_page,
        "The database is out of connection slots.",
        f"The database of {t.where} has {{{{ $value | humanizePercentage }}}} of the "
        "connection slots for ordinary roles in use: new connections are being refused.",
        cfg.database_critical_for,
    )


def database_down(t: FleetTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PoolExporterDatabaseDown",
        f"{t.build.database(m.DATABASE_UP)} == 0",
        cfg.severity_warning,
        "The sidecar cannot query the database.",
        "The sidecar {{ $labels.instance }} of {{ $labels.job }} has not been able to "
        f"query the database for {cfg.database_down_for}.",
        cfg.database_down_for,
    )


FLEET_ALERTS: tuple[Callable[[FleetTerms], Rule], ...] = (
    fleet_exceeds_database_limit,
    database_connections_near_limit,
    database_connections_exhausted,
    database_down,
)


def fleet_group(cfg: AlertConfig) -> Group:
    t = FleetTerms.of(cfg)
    return {"name": "pool-exporter-fleet", "rules": fleet_records(t) + [a(t) for a in FLEET_ALERTS]}


# -- the pooler between the pools and the database -------------------------------------------


@dataclass(frozen=True)
class PoolerTerms:
    """What the PgBouncer alerts share: the pooler's selectors, and the fleet's capacity
    against the database's slots."""

    cfg: AlertConfig
    fleet: str  # the fleet labels, for `by (...)`
    where: str  # the fleet's label values, for descriptions
    pool: str  # one pooler pool, for descriptions
    maxwait: str
    waiting: str
    servers: str
    pool_size: str
    timeout: str
    used: str
    max_client_conn: str
    session: str
    capacity: str
    available: str

    @classmethod
    def of(cls, cfg: AlertConfig) -> PoolerTerms:
        b = Builder(cfg)
        fleet = ", ".join(cfg.fleet_labels)

        def bouncer(metric: m.Metric, *matchers: str) -> str:
            return selector(metric.sample, *matchers, cfg.pgbouncer_selector)

        return cls(
            cfg=cfg,
            fleet=fleet,
            where=" ".join(f"{{{{ $labels.{label} }}}}" for label in cfg.fleet_labels),
            pool="pooler {{ $labels.pooler }} ({{ $labels.database }}/{{ $labels.user }})",
            maxwait=bouncer(m.PGBOUNCER_MAXWAIT),
            waiting=bouncer(m.PGBOUNCER_CLIENTS, 'state="waiting"'),
            # Every server connection the pool has, whatever it is doing: `used` and `tested`
            # ones are being reset or checked and serve no client either.
            servers=f"sum without (state) ({bouncer(m.PGBOUNCER_SERVERS)})",
            pool_size=bouncer(m.PGBOUNCER_DB_POOL_SIZE),
            timeout=f"min by ({fleet}) ({selector(m.TIMEOUT.sample, cfg.selector)} > 0)",
            used=bouncer(m.PGBOUNCER_LIST_ITEMS, 'list="used_clients"'),
            max_client_conn=bouncer(m.PGBOUNCER_MAX_CLIENT_CONN),
            session=selector(
                m.PGBOUNCER_DB_INFO.sample, 'pool_mode="session"', cfg.pgbouncer_selector
            ),
            # Computed here rather than read from the fleet group's records: a group only
            # sees its own records of the same evaluation, another group's may be one
            # evaluation old.
            capacity=f"sum by ({fleet}) ({b.pool(m.MAX_CONNECTIONS)})",
            available=(
                f"(max by ({fleet}) ({b.database(m.DATABASE_MAX_CONNECTIONS)}) "
                f"- max by ({fleet}) ({b.database(m.DATABASE_RESERVED_CONNECTIONS)}))"
            ),
        )


def pooler_saturated(t: PoolerTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PgBouncerPoolSaturated",
        f"{t.maxwait} >= {cfg.pooler_wait_warning_seconds:g} "
        f"and ignoring (state) {t.waiting} > 0 "
        f"and {t.servers} >= ignoring (user) group_left () ({t.pool_size} > 0)",
        cfg.severity_warning,
        "Clients are queueing in the pooler for a server connection.",
        f"{t.pool} has every one of its server connections in use and its oldest waiting "
        "client has waited {{ $value | humanizeDuration }}: the pooler's pool size, not "
        "the applications' pools, is what limits this database now.",
        cfg.page_for,
    )


def pooler_wait_near_pool_timeout(t: PoolerTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PgBouncerWaitNearPoolTimeout",
        f"max by ({t.fleet}, pooler, database, user) ({t.maxwait}) "
        f"/ on ({t.fleet}) group_left () {t.timeout} >= {cfg.pooler_wait_page_share:g}",
        cfg.severity_page,
        "Clients wait in the pooler for a large share of the applications' pool timeout.",
        f"The oldest client of {t.pool} has waited {{{{ $value | humanizePercentage }}}} of "
        "the applications' pool timeout: each holds an application connection while it "
        "waits, so callers queued behind it in the pools will hit TimeoutError.",
        cfg.page_for,
    )


def pooler_client_connections_near_limit(t: PoolerTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PgBouncerClientConnectionsNearLimit",
        f"{t.used} / ignoring (list) ({t.max_client_conn} > 0) >= {cfg.pooler_clients_warning:g}",
        cfg.severity_warning,
        "The pooler is running out of client connections.",
        "Pooler {{ $labels.pooler }} on {{ $labels.instance }} has "
        "{{ $value | humanizePercentage }} of max_client_conn in use: past it, new "
        "connections from the pools are refused.",
        cfg.pooler_clients_for,
    )


def pooler_fleet_exceeds_max_client_conn(t: PoolerTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PgBouncerFleetExceedsMaxClientConn",
        f"{t.capacity} / on ({t.fleet}) "
        f"sum by ({t.fleet}) ({t.max_client_conn}) > {cfg.fleet_share:g}",
        cfg.severity_warning,
        "The pools together may open more connections than the poolers accept.",
        f"The pools of {t.where} may open {{{{ $value | humanizePercentage }}}} of the client "
        "connections their poolers accept (max_client_conn): under load, new connections "
        "will be refused.",
        cfg.fleet_for,
    )


def pooler_session_mode_fleet_exceeds_database(t: PoolerTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PgBouncerSessionModeFleetExceedsDatabase",
        f"{t.capacity} / {t.available} > {cfg.fleet_share:g} "
        f"and on ({t.fleet}) group by ({t.fleet}) ({t.session})",
        cfg.severity_warning,
        "A pooler in session mode does not protect the database from the fleet.",
        f"The pools of {t.where} may open {{{{ $value | humanizePercentage }}}} of the "
        "connections the database allows ordinary roles, and their pooler runs in session "
        "mode, which gives every client connection a server connection of its own.",
        cfg.fleet_for,
    )


PGBOUNCER_ALERTS: tuple[Callable[[PoolerTerms], Rule], ...] = (
    pooler_saturated,
    pooler_wait_near_pool_timeout,
    pooler_client_connections_near_limit,
    pooler_fleet_exceeds_max_client_conn,
    pooler_session_mode_fleet_exceeds_database,
)


def pgbouncer_group(cfg: AlertConfig) -> Group:
    """The pooler between the pools and the database: its queue, its client limit, and
    whether it protects the database at all (session pooling does not)."""
    t = PoolerTerms.of(cfg)
    return {"name": "pool-exporter-pgbouncer", "rules": [a(t) for a in PGBOUNCER_ALERTS]}


# -- connections that stay out ----------------------------------------------------------------


@dataclass(frozen=True)
class HeldTerms:
    """What the long-checkout alerts share: the pool's own series, summed over workers where
    an alert is about the pool rather than one worker."""

    cfg: AlertConfig
    build: Builder

    @classmethod
    def of(cls, cfg: AlertConfig) -> HeldTerms:
        return cls(cfg=cfg, build=Builder(cfg))

    def increased(self, metric: m.Metric) -> str:
        window = self.cfg.error_window
        return f"sum without (pid) (increase({self.build.pool(metric)}[{window}])) > 0"


def checkout_held_past_timeout(t: HeldTerms) -> Rule:
    cfg, b = t.cfg, t.build
    oldest = b.pool(m.OLDEST_CHECKOUT)
    share = (
        f" * {cfg.long_checkout_timeout_share:g}" if cfg.long_checkout_timeout_share != 1 else ""
    )
    return alert(
        cfg,
        "SQLAlchemyPoolCheckoutHeldPastTimeout",
        f"{oldest} > ({b.pool(m.TIMEOUT)} > 0){share} "
        # pools without a timeout (NullPool, StaticPool) export none: an absolute limit
        f"or ({oldest} > {cfg.long_checkout_seconds:g} unless {b.pool(m.TIMEOUT)})",
        cfg.severity_warning,
        "A connection has been checked out for longer than the pool timeout.",
        f"{WHERE} has had a connection checked out for {{{{ $value | humanizeDuration }}}}, "
        f"longer than the pool timeout, for {cfg.long_checkout_for}: a leaked session, a "
        "transaction left open, or a slow query.",
        cfg.long_checkout_for,
    )


def long_checkouts(t: HeldTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolLongCheckouts",
        t.increased(m.LONG_CHECKOUTS),
        cfg.severity_ticket,
        "Connections were held past the application's long_checkout_threshold.",
        f"{WHERE_INSTANCE}: connections were held past long_checkout_threshold in the last "
        f"{cfg.error_window}; the application's log names where each was borrowed.",
    )


def connections_leaked(t: HeldTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolConnectionsLeaked",
        t.increased(m.GC_RETURNED),
        cfg.severity_ticket,
        "The garbage collector returned connections the application never closed.",
        f"{WHERE_INSTANCE}: the garbage collector returned connections the application "
        f"never closed in the last {cfg.error_window}; the application's log names where "
        "they were borrowed when long_checkout_threshold is set.",
    )


HELD_ALERTS: tuple[Callable[[HeldTerms], Rule], ...] = (
    checkout_held_past_timeout,
    long_checkouts,
    connections_leaked,
)


def long_checkout_group(cfg: AlertConfig) -> Group:
    """Connections that stay out: held past the pool timeout, past the application's
    long_checkout_threshold, or never returned until the garbage collector found them."""
    t = HeldTerms.of(cfg)
    return {"name": "pool-exporter-long-checkouts", "rules": [a(t) for a in HELD_ALERTS]}


# -- pools that stopped reporting ------------------------------------------------------------


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


# One function a group, in the order of the rule file; a new group is one more line here.
GROUPS: tuple[Callable[[AlertConfig], Group], ...] = (
    pool_group,
    fleet_group,
    absent_group,
    pgbouncer_group,
    long_checkout_group,
)


def groups(cfg: AlertConfig) -> list[Group]:
    return [group(cfg) for group in GROUPS]
