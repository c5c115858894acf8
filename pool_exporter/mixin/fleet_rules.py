"""The rules about the fleet of pools against the database they share, and about pools that
stopped reporting."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pool_exporter import metrics as m

from .config import MixinConfig
from .promql import Builder
from .records import RecordNames, record_names
from .rulebase import Group, Rule, Where, alert

# -- the fleet of pools against the database they share -------------------------------------


@dataclass(frozen=True)
class FleetTerms:
    """What the fleet records and alerts share: one database's clients, named by
    `fleet_labels`."""

    cfg: MixinConfig
    build: Builder
    names: RecordNames
    where: Where

    @classmethod
    def of(cls, cfg: MixinConfig) -> FleetTerms:
        return cls(cfg=cfg, build=Builder(cfg), names=record_names(cfg), where=Where(cfg))


def fleet_records(t: FleetTerms) -> list[Rule]:
    b, r = t.build, t.names
    return [
        {"record": r.fleet_capacity, "expr": b.fleet_capacity()},
        {"record": r.database_available, "expr": b.database_available()},
        {"record": r.fleet_database_ratio, "expr": f"{r.fleet_capacity} / {r.database_available}"},
        {
            "record": r.database_used_ratio,
            "expr": f"{b.database_connections()} / {r.database_available}",
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
        f"The pools of {t.where.fleet} may open {{{{ $value | humanizePercentage }}}} of the "
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
        f"The database of {t.where.fleet} has {{{{ $value | humanizePercentage }}}} of the "
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
        f"The database of {t.where.fleet} has {{{{ $value | humanizePercentage }}}} of the "
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
        f"The sidecar {t.where.target} has not been able to query the database for "
        f"{cfg.database_down_for}.",
        cfg.database_down_for,
    )


FLEET_ALERTS: tuple[Callable[[FleetTerms], Rule], ...] = (
    fleet_exceeds_database_limit,
    database_connections_near_limit,
    database_connections_exhausted,
    database_down,
)


def fleet_group(cfg: MixinConfig) -> Group:
    t = FleetTerms.of(cfg)
    return {"name": "pool-exporter-fleet", "rules": fleet_records(t) + [a(t) for a in FLEET_ALERTS]}


# -- pools that stopped reporting ------------------------------------------------------------


def absent_group(cfg: MixinConfig) -> Group:
    b = Builder(cfg)
    info = b.pool(m.INFO)
    target = ("job", "instance")
    lately = b.agg("group", f"max_over_time({info}[{cfg.absent_lookback}])", *target)
    on = f"on ({b.labels(*target)})"
    # A target still in service discovery (it has `up`) that reported pools within the
    # lookback and reports none now: down, or no longer instrumented. A target that was
    # removed (scaled down, replaced) has no `up` and stays quiet.
    expr = f"({lately} unless {on} {info}) and {on} up"
    rule = alert(
        cfg,
        "SQLAlchemyPoolMetricsAbsent",
        expr,
        cfg.severity_warning,
        "Pool metrics have disappeared.",
        f"{Where(cfg).target} reported connection pool metrics in the last "
        f"{cfg.absent_lookback} and has reported none for {cfg.absent_for}: the pools are not "
        "watched.",
        cfg.absent_for,
    )
    return {"name": "pool-exporter-absent", "rules": [rule]}
