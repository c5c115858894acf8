"""The recording rules' names (`level:metric:operations`): for the alerts that read them, and
for panels and tools of your own that read the records (import them rather than writing them
again).

The shipped dashboard does not read the records; it builds the same expressions with
`promql.Builder`, so that it works where the rules are not loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from pool_exporter import metrics as m

from .config import MixinConfig

__all__ = [
    "DATABASE_AVAILABLE",
    "DATABASE_USED_RATIO",
    "FLEET_CAPACITY",
    "FLEET_DATABASE_RATIO",
    "HOLD_MEAN",
    "QUEUE_DRAIN",
    "RECORDS",
    "UTILISATION",
    "UTILISATION_AVG",
    "WAIT_P99",
    "RecordNames",
    "record_names",
]


@dataclass(frozen=True)
class RecordNames:
    """Recording rule names of one config."""

    utilisation: str
    utilisation_avg: str
    hold_mean: str
    queue_drain: str
    wait_p99: str
    fleet_capacity: str
    database_available: str
    fleet_database_ratio: str
    database_used_ratio: str


def record_names(cfg: MixinConfig) -> RecordNames:
    """The names the rules of `cfg` record under: the rate window is part of some, and the
    fleet's start with the labels they keep."""
    w = cfg.rate_window
    # The level names the labels a record keeps: the cluster's too, where there is one.
    fleet = "_".join(cfg.with_cluster(*cfg.fleet_labels))
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


# With the default settings.
RECORDS = record_names(MixinConfig())
UTILISATION = RECORDS.utilisation  # in use / max connections, per pool and worker
UTILISATION_AVG = RECORDS.utilisation_avg
HOLD_MEAN = RECORDS.hold_mean
QUEUE_DRAIN = RECORDS.queue_drain  # seconds the callers queued now need to be served
WAIT_P99 = RECORDS.wait_p99
FLEET_CAPACITY = RECORDS.fleet_capacity
DATABASE_AVAILABLE = RECORDS.database_available  # max_connections minus reserved
FLEET_DATABASE_RATIO = RECORDS.fleet_database_ratio
DATABASE_USED_RATIO = RECORDS.database_used_ratio
