"""What every rule group shares: the rule's shape, the words an alert's description uses to say
where it fires, and the terms the simplest groups' alerts are written with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Self

from .config import MixinConfig
from .promql import WORKER, Builder

Rule = dict[str, Any]
Group = dict[str, Any]


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
        return values + self.cluster if self.cfg.cluster_beside(self.cfg.fleet_labels) else values

    @property
    def target(self) -> str:
        return f"{{{{ $labels.instance }}}} of {{{{ $labels.job }}}}{self.cluster}"


@dataclass(frozen=True)
class Terms:
    """What a group's alerts are written with: the config, its PromQL builder, and the words
    for where an alert fires. Groups that share more extend it."""

    cfg: MixinConfig
    build: Builder
    where: Where

    @classmethod
    def of(cls, cfg: MixinConfig) -> Self:
        return cls(cfg=cfg, build=Builder(cfg), where=Where(cfg))
