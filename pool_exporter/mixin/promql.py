"""PromQL from one config, for the rules and the dashboard alike: selectors, aggregations that
keep the cluster, and the definitions both show (utilisation, the fleet against the database).

The rules call the builder bare; the dashboard gives it its variables' matchers as well. A
selector or a cluster label therefore narrows and groups a panel exactly as it does an alert.
"""

from __future__ import annotations

from dataclasses import dataclass

from pool_exporter import metrics as m

from .config import MixinConfig

WORKER = m.WORKER_LABEL


def selector(name: str, *matchers: str) -> str:
    """`name{a,b}` of the non-empty matchers, or the bare name."""
    found = [x for x in matchers if x]
    return f"{name}{{{','.join(found)}}}" if found else name


@dataclass(frozen=True)
class Builder:
    """PromQL pieces for one config. `pool_scope` and `fleet_scope` are extra matchers put
    first in every selector of a pool series (per pool, or across the fleet) and of a database
    or pooler series: the dashboard's variables, none in the rules."""

    cfg: MixinConfig
    pool_scope: tuple[str, ...] = ()
    fleet_scope: tuple[str, ...] = ()

    # -- selectors --------------------------------------------------------------------------

    def pool(self, metric: m.Metric, *matchers: str, suffix: str = "") -> str:
        """A pool series, narrowed to the chosen pools."""
        return selector(metric.sample + suffix, *self.pool_scope, *matchers, self.cfg.selector)

    def fleet_pool(self, metric: m.Metric, *matchers: str) -> str:
        """A pool series across every pool of the fleet."""
        return selector(metric.sample, *self.fleet_scope, *matchers, self.cfg.selector)

    def database(self, metric: m.Metric, *matchers: str) -> str:
        """A sidecar's database series."""
        return selector(metric.sample, *self.fleet_scope, *matchers, self.cfg.database_selector)

    def pooler(self, metric: m.Metric, *matchers: str) -> str:
        """A sidecar's PgBouncer series."""
        return selector(metric.sample, *self.fleet_scope, *matchers, self.cfg.pgbouncer_selector)

    # -- aggregations -----------------------------------------------------------------------

    def labels(self, *names: str) -> str:
        """`names` with the cluster label first when there is one (and it is not among them):
        what an aggregation keeps, so that two clusters never add up."""
        cluster = self.cfg.cluster_label
        return ", ".join((cluster, *names) if cluster and cluster not in names else names)

    def agg(self, op: str, expr: str, *names: str) -> str:
        """`op by (cluster, names) (expr)`; `op(expr)` when there is nothing to keep."""
        kept = self.labels(*names)
        return f"{op} by ({kept}) ({expr})" if kept else f"{op}({expr})"

    @property
    def fleet(self) -> str:
        """The labels that name one database's fleet of clients, with the cluster."""
        return self.labels(*self.cfg.fleet_labels)

    def rate(self, metric: m.Metric, window: str, suffix: str = "") -> str:
        """Per second over `window`, per pool: counters and histograms carry no worker label
        (the multiprocess reader sums them over every worker, exited ones included)."""
        return f"rate({self.pool(metric, suffix=suffix)}[{window}])"

    # -- what the rules record and the dashboard draws --------------------------------------

    def utilisation(self, *matchers: str) -> str:
        """Connections in use / max connections, per pool and worker (QueuePool types)."""
        in_use = self.pool(m.CONNECTIONS, *matchers, 'state="in_use"')
        return f"{in_use} / ignoring (state) ({self.pool(m.MAX_CONNECTIONS, *matchers)} > 0)"

    def fleet_capacity(self) -> str:
        """Connections every pool of the fleet may open at once."""
        return self.agg("sum", self.fleet_pool(m.MAX_CONNECTIONS), *self.cfg.fleet_labels)

    def database_available(self) -> str:
        """The database's connection slots for ordinary roles. Every sidecar reports the same
        server: max, not sum, across sidecars."""
        names = self.cfg.fleet_labels
        most = self.agg("max", self.database(m.DATABASE_MAX_CONNECTIONS), *names)
        reserved = self.agg("max", self.database(m.DATABASE_RESERVED_CONNECTIONS), *names)
        return f"{most} - {reserved}"
