"""What every rule group shares: the rule's shape, the recording rules' names, and the words an
alert's description uses to say where it fires."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pool_exporter import metrics as m

from .config import MixinConfig
from .promql import WORKER

Rule = dict[str, Any]
Group = dict[str, Any]


@dataclass(frozen=True)
class RecordNames:
    """Recording rule names (`level:metric:operations`), for the alerts that read them."""

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
    w = cfg.rate_window
    # The level names the labels a record keeps: the cluster's too, where there is one.
    kept = (cfg.cluster_label,) if cfg.cluster_label not in ("", *cfg.fleet_labels) else ()
    fleet = "_".join((*kept, *cfg.fleet_labels))
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


def alert(  # noqa: PLR0917 - read as a table of rules, one argument a line
    cfg: MixinConfig,
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


@dataclass(frozen=True)
class Where:
    """Where an alert fires, as its description says it: a pool in one worker (per-worker
    gauges carry the worker slot in multiprocess mode), a pool on an instance, a fleet, a
    scrape target; each followed by the cluster where there is a cluster label."""

    cfg: MixinConfig

    @property
    def cluster(self) -> str:
        label = self.cfg.cluster_label
        return f" in cluster {{{{ $labels.{label} }}}}" if label else ""

    @property
    def pool(self) -> str:
        return f"pool {{{{ $labels.pool }}}} on {{{{ $labels.instance }}}}{self.cluster}"

    @property
    def worker(self) -> str:
        return (
            f"{self.pool}{{{{ if $labels.{WORKER} }}}} (worker {{{{ $labels.{WORKER} }}}})"
            "{{ end }}"
        )

    @property
    def fleet(self) -> str:
        values = " ".join(f"{{{{ $labels.{label} }}}}" for label in self.cfg.fleet_labels)
        return values if self.cfg.cluster_label in self.cfg.fleet_labels else values + self.cluster

    @property
    def target(self) -> str:
        return f"{{{{ $labels.instance }}}} of {{{{ $labels.job }}}}{self.cluster}"
