"""The rules about what the database is stuck on: a session left idle in a transaction, and a
role or a database near its own connection limit."""

from __future__ import annotations

from collections.abc import Callable

from pool_exporter import metrics as m

from .config import MixinConfig
from .rulebase import Group, Rule, Terms, alert

# Every sidecar that watches a server reports it alike: max across sidecars, per fleet
# (`fleet_labels`), in every alert below.


def session_idle_in_transaction(t: Terms) -> Rule:
    cfg, b = t.cfg, t.build
    idle = b.database(m.DATABASE_OLDEST_IDLE_IN_TRANSACTION)
    oldest = b.agg("max", idle, *cfg.fleet_labels, "database", "application_name")
    return alert(
        cfg,
        "PoolExporterSessionIdleInTransaction",
        f"{oldest} >= {cfg.idle_in_transaction_seconds:g}",
        cfg.severity_warning,
        "A database session has been left idle in a transaction.",
        "A session of {{ $labels.application_name }} on database {{ $labels.database }} of "
        f"{t.where.fleet} has been idle in a transaction for {{{{ $value | humanizeDuration }}}}: "
        "it keeps its locks, keeps vacuum from removing the rows its snapshot can see, and "
        "holds a connection of its pool.",
        cfg.idle_in_transaction_for,
    )


def role_near_connection_limit(t: Terms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PoolExporterRoleNearConnectionLimit",
        f"{t.build.role_limit_share()} >= {cfg.connection_limit_warning:g}",
        cfg.severity_warning,
        "A database role is near its own connection limit.",
        f"Role {{{{ $labels.role }}}} on the database of {t.where.fleet} holds "
        "{{ $value | humanizePercentage }} of its CONNECTION LIMIT: past it, its new "
        "connections are refused (too many connections for role), whatever max_connections "
        "allows.",
        cfg.connection_limit_for,
    )


def database_near_connection_limit(t: Terms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "PoolExporterDatabaseNearConnectionLimit",
        f"{t.build.database_limit_share()} >= {cfg.connection_limit_warning:g}",
        cfg.severity_warning,
        "A database is near its own connection limit.",
        f"Database {{{{ $labels.database }}}} of {t.where.fleet} holds "
        "{{ $value | humanizePercentage }} of its CONNECTION LIMIT: past it, new connections "
        "to it are refused, whatever max_connections allows.",
        cfg.connection_limit_for,
    )


DATABASE_ALERTS: tuple[Callable[[Terms], Rule], ...] = (
    session_idle_in_transaction,
    role_near_connection_limit,
    database_near_connection_limit,
)


def database_group(cfg: MixinConfig) -> Group:
    """What the database is stuck on: sessions idle in a transaction, and the connection limits
    of its roles and databases."""
    t = Terms.of(cfg)
    return {"name": "pool-exporter-database", "rules": [a(t) for a in DATABASE_ALERTS]}
