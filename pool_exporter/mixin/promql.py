"""PromQL from one config, for the rules and the dashboard alike: selectors, aggregations that
keep the cluster, windows, and the definitions both show (utilisation, the fleet against the
database).

The rules call the builder bare; the dashboard gives it its variables' matchers as well. A
selector or a cluster label therefore narrows and groups a panel exactly as it does an alert.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pool_exporter import metrics as m

from .config import MixinConfig

WORKER = m.WORKER_LABEL


def selector(name: str, *matchers: str) -> str:
    """`name{a,b}` of the non-empty matchers, or the bare name."""
    found = [x for x in matchers if x]
    return f"{name}{{{','.join(found)}}}" if found else name


# A label value in double quotes (whatever parentheses it holds), or any other one character.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|.', re.DOTALL)


def grouped(expr: str) -> str:
    """`expr` in parentheses, unless it is one parenthesised group already."""
    depth, tokens = 0, _TOKEN.findall(expr)
    for i, token in enumerate(tokens):
        depth += {"(": 1, ")": -1}.get(token, 0)
        if depth == 0 and (i < len(tokens) - 1 or token != ")"):
            return f"({expr})"
    return expr


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

    def firing_alerts(self) -> str:
        """Prometheus' own ALERTS series of the alerts firing in the chosen fleet."""
        return selector("ALERTS", 'alertstate="firing"', *self.fleet_scope)

    # -- aggregations -----------------------------------------------------------------------

    def labels(self, *names: str) -> str:
        """`names` with the cluster label first (MixinConfig.with_cluster), as a PromQL list:
        what an aggregation or a match keeps, so that two clusters never add up."""
        return ", ".join(self.cfg.with_cluster(*names))

    def agg(self, op: str, expr: str, *names: str) -> str:
        """`op by (cluster, names) (expr)`; `op(expr)` when there is nothing to keep."""
        kept = self.labels(*names)
        return f"{op} by ({kept}) ({expr})" if kept else f"{op}({expr})"

    def without(self, op: str, expr: str, *names: str) -> str:
        """`op without (names) (expr)`: every other label, the cluster's too, is kept."""
        return f"{op} without ({', '.join(names)}) {grouped(expr)}"

    def across_workers(self, op: str, expr: str) -> str:
        """`expr`, a per-worker gauge (or a record of them), aggregated over the pool's
        workers: multiprocess gauges carry the worker slot, counters do not."""
        return self.without(op, expr, WORKER)

    @property
    def fleet(self) -> str:
        """The labels that name one database's fleet of clients, with the cluster."""
        return self.labels(*self.cfg.fleet_labels)

    def _by(self, by: Sequence[str] | None) -> Sequence[str]:
        """What a fleet or database figure is grouped by: each fleet (`fleet_labels`) unless
        `by` says otherwise; `()` is the total of everything selected (the dashboard's)."""
        return self.cfg.fleet_labels if by is None else by

    # -- windows ----------------------------------------------------------------------------

    def rate(self, metric: m.Metric, window: str, suffix: str = "") -> str:
        """Per second over `window`, per pool: counters and histograms carry no worker label
        (the multiprocess reader sums them over every worker, exited ones included)."""
        return f"rate({self.pool(metric, suffix=suffix)}[{window}])"

    def increase(self, metric: m.Metric, window: str, suffix: str = "") -> str:
        """The increase over `window`, per pool (see `rate`)."""
        return f"increase({self.pool(metric, suffix=suffix)}[{window}])"

    # -- what the rules record and the dashboard draws --------------------------------------

    def utilisation(self, *matchers: str) -> str:
        """Connections in use / max connections, per pool and worker (QueuePool types)."""
        in_use = self.pool(m.CONNECTIONS, *matchers, 'state="in_use"')
        return f"{in_use} / ignoring (state) ({self.pool(m.MAX_CONNECTIONS, *matchers)} > 0)"

    def fleet_capacity(self, by: Sequence[str] | None = None) -> str:
        """Connections every pool of the fleet may open at once."""
        return self.agg("sum", self.fleet_pool(m.MAX_CONNECTIONS), *self._by(by))

    def database_setting(self, metric: m.Metric, by: Sequence[str] | None = None) -> str:
        """A setting of the database server. Every sidecar of a fleet reports the same server:
        max, not sum, across sidecars."""
        return self.agg("max", self.database(metric), *self._by(by))

    def database_available(self, by: Sequence[str] | None = None) -> str:
        """The database's connection slots for ordinary roles."""
        most = self.database_setting(m.DATABASE_MAX_CONNECTIONS, by)
        reserved = self.database_setting(m.DATABASE_RESERVED_CONNECTIONS, by)
        return f"{most} - {reserved}"

    def database_connections(self, *kept: str, by: Sequence[str] | None = None) -> str:
        """Client connections open on the database by `kept` of their labels (database, state,
        application_name), the others summed; max across the sidecars, as a setting."""
        series = self.database(m.DATABASE_CONNECTIONS)
        dropped = [x for x in m.DATABASE_CONNECTIONS.labels if x not in kept]
        summed = self.without("sum", series, *dropped) if dropped else series
        return self.agg("max", summed, *self._by(by), *kept)

    def limit_share(self, held: str, limit: m.Metric, label: str, by: Sequence[str] | None) -> str:
        """`held` (connections, max by `label` and `by`) over the CONNECTION LIMIT `limit` of
        the same `label`, where there is one above 0: what a role or a database uses of its
        own limit. A limit of 0 refuses every connection and is no "near"."""
        most = self.agg("max", f"{self.database(limit)} > 0", *self._by(by), label)
        return f"{held} / {most}"

    def role_limit_share(self, by: Sequence[str] | None = None) -> str:
        """Each role's connections over its CONNECTION LIMIT (roles with one)."""
        held = self.agg("max", self.database(m.DATABASE_ROLE_CONNECTIONS), *self._by(by), "role")
        return self.limit_share(held, m.DATABASE_ROLE_CONNECTION_LIMIT, "role", by)

    def database_limit_share(self, by: Sequence[str] | None = None) -> str:
        """Each database's client connections over its CONNECTION LIMIT (databases with one)."""
        held = self.database_connections("database", by=by)
        return self.limit_share(held, m.DATABASE_CONNECTION_LIMIT, "database", by)
