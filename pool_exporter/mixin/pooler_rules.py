"""The rules about the pooler (PgBouncer) between the pools and the database: its queue, its
client limit, and whether it protects the database at all (session pooling does not)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pool_exporter import metrics as m

from .config import MixinConfig
from .promql import Builder
from .rulebase import Group, Rule, Where, alert

# -- the pooler between the pools and the database -------------------------------------------


@dataclass(frozen=True)
class PoolerTerms:
    """What the PgBouncer alerts share: the pooler's selectors, and the fleet's capacity
    against the database's slots."""

    cfg: MixinConfig
    build: Builder
    fleet: str  # the fleet labels (and the cluster's), for `on (...)`
    where: Where
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
    def of(cls, cfg: MixinConfig) -> PoolerTerms:
        b = Builder(cfg)
        fleet, bouncer, where = b.fleet, b.pooler, Where(cfg)
        return cls(
            cfg=cfg,
            build=b,
            fleet=fleet,
            where=where,
            pool="pooler {{ $labels.pooler }} ({{ $labels.database }}/{{ $labels.user }})"
            + where.cluster,
            maxwait=bouncer(m.PGBOUNCER_MAXWAIT),
            waiting=bouncer(m.PGBOUNCER_CLIENTS, 'state="waiting"'),
            # Every server connection the pool has, whatever it is doing: `used` and `tested`
            # ones are being reset or checked and serve no client either.
            servers=b.without("sum", bouncer(m.PGBOUNCER_SERVERS), "state"),
            pool_size=bouncer(m.PGBOUNCER_DB_POOL_SIZE),
            timeout=b.agg("min", f"{b.pool(m.TIMEOUT)} > 0", *cfg.fleet_labels),
            used=bouncer(m.PGBOUNCER_LIST_ITEMS, 'list="used_clients"'),
            max_client_conn=bouncer(m.PGBOUNCER_MAX_CLIENT_CONN),
            session=bouncer(m.PGBOUNCER_DB_INFO, 'pool_mode="session"'),
            # Computed here rather than read from the fleet group's records: a group only
            # sees its own records of the same evaluation, another group's may be one
            # evaluation old.
            capacity=b.fleet_capacity(),
            available=f"({b.database_available()})",
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
        f"{t.build.agg('max', t.maxwait, *cfg.fleet_labels, 'pooler', 'database', 'user')} "
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
        "Pooler {{ $labels.pooler }} on {{ $labels.instance }}"
        f"{t.where.cluster} has {{{{ $value | humanizePercentage }}}} of max_client_conn in "
        "use: past it, new connections from the pools are refused.",
        cfg.pooler_clients_for,
    )


def pooler_fleet_exceeds_max_client_conn(t: PoolerTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PgBouncerFleetExceedsMaxClientConn",
        f"{t.capacity} / on ({t.fleet}) "
        f"{t.build.agg('sum', t.max_client_conn, *cfg.fleet_labels)} > {cfg.fleet_share:g}",
        cfg.severity_warning,
        "The pools together may open more connections than the poolers accept.",
        f"The pools of {t.where.fleet} may open {{{{ $value | humanizePercentage }}}} of the "
        "client connections their poolers accept (max_client_conn): under load, new "
        "connections will be refused.",
        cfg.fleet_for,
    )


def pooler_session_mode_fleet_exceeds_database(t: PoolerTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PgBouncerSessionModeFleetExceedsDatabase",
        f"{t.capacity} / {t.available} > {cfg.fleet_share:g} "
        f"and on ({t.fleet}) {t.build.agg('group', t.session, *cfg.fleet_labels)}",
        cfg.severity_warning,
        "A pooler in session mode does not protect the database from the fleet.",
        f"The pools of {t.where.fleet} may open {{{{ $value | humanizePercentage }}}} of the "
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


def pgbouncer_group(cfg: MixinConfig) -> Group:
    """The pooler between the pools and the database: its queue, its client limit, and
    whether it protects the database at all (session pooling does not)."""
    t = PoolerTerms.of(cfg)
    return {"name": "pool-exporter-pgbouncer", "rules": [a(t) for a in PGBOUNCER_ALERTS]}
