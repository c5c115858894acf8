"""What a pool measured, read back from a Prometheus server or from a replay's results."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pool_exporter import metrics as m
from pool_exporter.durations import seconds

from .holds import Holds, HoldTime
from .promapi import PrometheusAPI
from .results import Result


class NoData(Exception):
    """The source has nothing usable for the question asked."""


@dataclass(frozen=True)
class Measured:
    """One pool across the fleet. Rates are fleet totals; `pools` is how many pools
    (worker processes, each with its own pool) the rate was spread over."""

    source: str
    pool: str
    pools: int
    rate: float  # checkouts per second, average over the window
    peak_rate: float  # the busiest stretch of the window
    hold_mean: float
    hold_p95: float | None
    peak_in_use: float  # the most connections one pool had out at once
    timeouts: float  # pool timeouts in the window
    wait_p99: float | None
    pool_size: int | None = None
    max_overflow: int | None = None
    pool_timeout: float | None = None
    db_max_connections: int | None = None
    db_reserved: int | None = None
    # the push a replay ran, as a default target: users over seconds
    burst_users: int | None = None
    burst_ramp: float | None = None
    pooler: PoolerLimits | None = None
    # the hold-time histogram: (le, cumulative count), as the buckets count; () when the
    # source has none (a replay written before results carried it)
    hold_buckets: tuple[tuple[float, float], ...] = ()
    hold_median: float | None = None
    hold_count: float = 0.0  # how many holds the figures come from (0: not known)
    # the typical rate of the window (the median of its stretches), which a push in the window
    # does not move: the steady traffic a planned push comes on top of (None: not measured)
    steady_rate: float | None = None
    # behind a pooler, per transaction: the database's time and the pooler's wait (SHOW STATS)
    service_time: float | None = None
    pooler_wait: float | None = None
    # the database's connections held by clients other than the pooler (the most in the
    # window), and the lowest CONNECTION LIMIT of the databases the pooler serves
    db_others: int | None = None
    db_limit: int | None = None
    service_source: str = "the pooler's SHOW STATS"

    @property
    def steady(self) -> float:
        """The steady traffic a planned push comes on top of: the typical rate where it was
        measured, else the busiest stretch."""
        return self.peak_rate if self.steady_rate is None else self.steady_rate

    def holds(self) -> Holds:
        """The hold-time distribution the simulation draws from: the histogram when there is
        one, else a lognormal through the median (or the mean) and the p95."""
        if self.hold_buckets and max(n for _, n in self.hold_buckets) > 0:
            return Holds.from_buckets(self.hold_buckets, self.hold_mean, self.hold_count)
        median = self.hold_median or self.hold_mean
        p95 = max(median, self.hold_p95 or median)
        hold = HoldTime(median, p95)
        return Holds.from_lognormal(hold, self.hold_mean, m.HOLD_BUCKETS, self.hold_count)


@dataclass(frozen=True)
class PoolerLimits:
    """PgBouncer between the fleet and the database, summed over the poolers."""

    max_client_conn: int | None = None
    # server connections the poolers may open to the database: pool_size summed over their
    # databases (one such pool per user)
    pool_size: int | None = None
    mode: str | None = None  # session if any database runs in session mode
    reserve_pool: int = 0  # more server connections, for clients that waited too long


def pooler_from_prometheus(api: PrometheusAPI, at: float | None = None) -> PoolerLimits | None:
    """What the sidecar's PgBouncer view says, or None when no pooler is watched."""
    clients = api.scalar(f"sum({m.PGBOUNCER_MAX_CLIENT_CONN.name})", at)
    if clients is None:
        return None
    size = api.scalar(f"sum({m.PGBOUNCER_DB_POOL_SIZE.name})", at)
    modes = api.values(f"count by (pool_mode) ({m.PGBOUNCER_DB_INFO.sample})", "pool_mode", at)
    mode = "session" if "session" in modes else min(modes, default=None)
    reserve = api.scalar(f"sum({m.PGBOUNCER_DB_RESERVE_POOL.name})", at)
    return PoolerLimits(_int(clients), _int(size), mode, _int(reserve) or 0)


@dataclass(frozen=True)
class LayerFigures:
    """What the pooler's and the database's views measured over a window."""

    service_time: float | None = None
    pooler_wait: float | None = None
    db_others: int | None = None
    db_limit: int | None = None


def layers_from_prometheus(
    api: PrometheusAPI, window: str, database_matchers: str, at: float | None = None
) -> LayerFigures:
    """The database's time and the pooler's wait per transaction (SHOW STATS, summed over the
    pooler's databases), the other clients' connections and the pooled databases' limit.
    PgBouncer counts a transaction's time from when its client asked, its wait for a server
    connection included: the database's own time is the transaction time less the wait."""
    db_sel = _braces(database_matchers)
    xacts, xact_time, wait = (
        api.scalar(_grown(metric.sample, window), at)
        for metric in (
            m.PGBOUNCER_TRANSACTIONS,
            m.PGBOUNCER_SERVER_TRANSACTION_TIME,
            m.PGBOUNCER_CLIENT_WAIT,
        )
    )
    service = pooler_wait = None
    if xacts and xact_time is not None and wait is not None:
        service, pooler_wait = _finite((xact_time - wait) / xacts), max(0.0, wait / xacts)
    others = api.scalar(
        f"max_over_time(clamp_min(sum({m.DATABASE_CONNECTIONS.name}{db_sel}) - "
        f"sum({m.PGBOUNCER_DB_CURRENT_CONNECTIONS.name}), 0)[{window}:])",
        at,
    )
    limit = api.scalar(
        f"min({m.DATABASE_CONNECTION_LIMIT.name}{db_sel} and on (database) "
        f"{m.PGBOUNCER_DB_POOL_SIZE.name})",
        at,
    )
    return LayerFigures(service, pooler_wait, _int(others), _int(limit))


def from_replay(result: Result, source: str) -> Measured:
    if not result.hold or not result.ok:
        raise NoData(f"{source}: the replay has no successful requests to learn hold times from")
    scenario = result.scenario
    background = float(scenario.get("background_rate", 0.0))
    measured = Measured(
        source=f"replay results {source}",
        pool=result.pool,
        pools=1,
        rate=background,
        peak_rate=background,
        steady_rate=background,
        hold_mean=result.hold["mean"],
        hold_p95=result.hold.get("p95"),
        peak_in_use=result.peak_in_use,
        timeouts=result.timeouts,
        wait_p99=result.wait.get("p99"),
        pool_size=result.settings["pool_size"],
        max_overflow=result.settings["max_overflow"],
        pool_timeout=result.settings["pool_timeout"],
        burst_users=int(scenario["users"]),
        burst_ramp=float(scenario["ramp"]),
        hold_buckets=tuple((float(le), float(n)) for le, n in result.hold_buckets),
        hold_median=result.hold.get("p50"),
        hold_count=float(result.ok),
        # through a pooler (replay --through-pooler): the database's time and the pooler's
        # wait per request, as the replay measured them
        service_time=_per_request(result, "database") if "pooler" in result.layers else None,
        pooler_wait=_per_request(result, "pooler"),
        service_source="the replay through the pooler",
    )
    measured.holds()  # a histogram that cannot be drawn from: ValueError, here
    return measured


def from_prometheus(
    api: PrometheusAPI,
    *,
    window: str,
    pool: str | None = None,
    matchers: str = "",
    database_matchers: str = "",
    at: float | None = None,
) -> list[Measured]:
    """Every pool with checkouts in the window (or the one named), measured over `window`;
    `matchers` select the pool series, `database_matchers` the database server's."""
    span = seconds(window)
    # the busiest stretch: the highest one-minute rate in the window (shorter windows use
    # their own length, and at least four scrapes' worth)
    inner = f"{max(1, min(60, round(span / 4)))}s"
    sel = _braces(matchers, f'pool="{pool}"' if pool else "")
    in_use = _braces(matchers, f'pool="{pool}"' if pool else "", 'state="in_use"')
    db_sel = _braces(database_matchers)

    def by_pool(expr: str) -> dict[str, float]:
        return api.values(expr, m.POOL_LABEL, at)

    hold = m.HOLD.name
    wait = m.CHECKOUT_WAIT.name
    w = f"[{window}]"
    pools = by_pool(f"count by (pool) ({m.SIZE.name}{sel})") or by_pool(
        f"count by (pool) ({m.CHECKOUTS.sample}{sel})"
    )
    if not pools:
        raise _no_pools(api, pool, matchers)
    rate = by_pool(f"sum by (pool) (rate({m.CHECKOUTS.sample}{sel}{w}))")
    peak_rate = by_pool(
        f"max by (pool) (max_over_time((sum by (pool) "
        f"(rate({m.CHECKOUTS.sample}{sel}[{inner}])))[{window}:]))"
    )
    hold_mean = by_pool(
        f"sum by (pool) (rate({hold}_sum{sel}{w})) / sum by (pool) (rate({hold}_count{sel}{w}))"
    )
    hold_p95 = by_pool(f"histogram_quantile(0.95, sum by (pool, le) (rate({hold}_bucket{sel}{w})))")
    hold_p50 = by_pool(f"histogram_quantile(0.5, sum by (pool, le) (rate({hold}_bucket{sel}{w})))")
    hold_count = by_pool(f"sum by (pool) (increase({hold}_count{sel}{w}))")
    buckets = _buckets(api, f"sum by (pool, le) (rate({hold}_bucket{sel}{w}))", at)
    wait_p99 = by_pool(f"histogram_quantile(0.99, sum by (pool, le) (rate({wait}_bucket{sel}{w})))")
    peak = by_pool(f"max by (pool) (max_over_time({m.CONNECTIONS.name}{in_use}{w}))")
    timeouts = by_pool(f"sum by (pool) (increase({m.CHECKOUT_TIMEOUTS.sample}{sel}{w}))")
    size = by_pool(f"max by (pool) ({m.SIZE.name}{sel})")
    overflow = by_pool(f"max by (pool) ({m.MAX_OVERFLOW.name}{sel})")
    timeout = by_pool(f"max by (pool) ({m.TIMEOUT.name}{sel})")
    db_max = api.scalar(f"max({m.DATABASE_MAX_CONNECTIONS.name}{db_sel})", at)
    db_reserved = api.scalar(f"max({m.DATABASE_RESERVED_CONNECTIONS.name}{db_sel})", at)
    pooler = pooler_from_prometheus(api, at)
    steady: dict[str, float] = {}
    layers = LayerFigures()
    if pooler is not None:  # what the stack's sizing reads besides (stacksizing.py)
        steady = by_pool(
            f"max by (pool) (quantile_over_time(0.5, (sum by (pool) "
            f"(rate({m.CHECKOUTS.sample}{sel}[{inner}])))[{window}:]))"
        )
        layers = layers_from_prometheus(api, window, database_matchers, at)

    found = []
    for name, count in sorted(pools.items()):
        if not rate.get(name) or name not in hold_mean:
            continue
        found.append(
            Measured(
                source=f"Prometheus {api.shown}, last {window}",
                pool=name,
                pools=int(count),
                rate=rate[name],
                peak_rate=max(rate[name], peak_rate.get(name, 0.0)),
                hold_mean=hold_mean[name],
                hold_p95=hold_p95.get(name),
                peak_in_use=peak.get(name, 0.0),
                timeouts=timeouts.get(name, 0.0),
                wait_p99=wait_p99.get(name),
                pool_size=_int(size.get(name)),
                max_overflow=_int(overflow.get(name)),
                pool_timeout=timeout.get(name),
                db_max_connections=_int(db_max),
                db_reserved=_int(db_reserved),
                pooler=pooler,
                hold_buckets=buckets.get(name, ()),
                hold_median=hold_p50.get(name),
                hold_count=hold_count.get(name, 0.0),
                steady_rate=steady.get(name),
                service_time=layers.service_time,
                pooler_wait=layers.pooler_wait,
                db_others=layers.db_others,
                db_limit=layers.db_limit,
            )
        )
    if not found:
        raise NoData(
            f"no checkouts in the last {window} at Prometheus {api.shown} for "
            f"{', '.join(sorted(pools))}: nothing to learn hold times from (a longer --window?)"
        )
    return found


def _buckets(
    api: PrometheusAPI, expr: str, at: float | None
) -> dict[str, tuple[tuple[float, float], ...]]:
    """{pool: ((le, cumulative rate), ...)} of a histogram's buckets, in `le` order."""
    found: dict[str, list[tuple[float, float]]] = {}
    for series in api.query(expr, at):
        labels = series["metric"]
        try:
            le, value = float(labels["le"]), float(series["value"][1])
        except (KeyError, ValueError):
            continue
        if math.isfinite(value):  # NaN: no holds in the window
            found.setdefault(labels.get(m.POOL_LABEL, ""), []).append((le, value))
    return {pool: tuple(sorted(pairs)) for pool, pairs in found.items()}


def _no_pools(api: PrometheusAPI, pool: str | None, matchers: str) -> NoData:
    what = f"pool {pool!r}" if pool else "any pool"
    return NoData(
        f"Prometheus at {api.url} has no {m.CHECKOUTS.sample} series for {what}"
        f"{' matching ' + matchers if matchers else ''}; is the exporter being scraped?"
    )


def _grown(counter: str, window: str) -> str:
    """PromQL: how much `counter` (summed) grew over `window`, from its sample before the
    window to its last, a series born inside the window counted from zero. These are ratios'
    terms: increase() would extrapolate each counter to the window's edges by a share of its
    own (capped where it would reach zero), which moved the database's time per transaction by
    10 % and more where SHOW STATS series began inside the window (PgBouncer counts a
    transaction when it begins, its time when it ends). A series that reset inside the window
    takes increase()'s figure."""
    grown = f"({counter} - ({counter} offset {window} or {counter} * 0))"
    return f"sum({grown} unless resets({counter}[{window}]) > 0 or increase({counter}[{window}]))"


def _braces(*matchers: str) -> str:
    """A PromQL selector of the non-empty matcher lists (each with or without its braces)."""
    inner = ",".join(x for x in (matcher.strip("{} ") for matcher in matchers) if x)
    return "{" + inner + "}" if inner else ""


def _int(value: float | None) -> int | None:
    return None if value is None else round(value)


def _per_request(result: Result, layer: str) -> float | None:
    """A layer's mean seconds per request of a replay that measured it."""
    times = result.layers.get(layer)
    return _finite(times["total"] / result.ok) if times and result.ok else None


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) and value > 0 else None
