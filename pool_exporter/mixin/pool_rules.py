"""The rules about one pool in one worker: utilisation, the queue, waits and timeouts,
headroom, connect errors, invalidations and overflow churn; and about connections that stay
out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from pool_exporter import metrics as m

from .config import MixinConfig
from .promql import WORKER, Builder
from .records import RecordNames, record_names
from .rulebase import Group, Rule, Terms, Where, alert

# -- one pool in one worker ------------------------------------------------------------------
# An alert is a small function of the shared terms, listed in its group's tuple: a new alert
# is a new function and one more line in a tuple.


@dataclass(frozen=True)
class PoolTerms:
    """The selectors and conditions the pool records and alerts share."""

    cfg: MixinConfig
    build: Builder
    names: RecordNames
    where: Where
    capacity: str  # max connections, where the pool has a capacity
    timeout: str  # the pool timeout, where it has one
    waiting: str
    busy: str  # utilisation at or above the warning threshold

    @classmethod
    def of(cls, cfg: MixinConfig) -> PoolTerms:
        b, r = Builder(cfg), record_names(cfg)
        return cls(
            cfg=cfg,
            build=b,
            names=r,
            where=Where(cfg),
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
        {"record": r.utilisation, "expr": b.utilisation()},
        {"record": r.utilisation_avg, "expr": f"avg_over_time({r.utilisation}[{w}])"},
        {"record": r.hold_mean, "expr": f"{hold_sum} / {hold_count}"},
        # How long the callers queued now wait to be served: each needs one of `capacity`
        # connections for the recent mean hold time. Histograms carry no worker, gauges may.
        {
            "record": r.queue_drain,
            "expr": f"{t.waiting} * ignoring ({WORKER}) group_left () {r.hold_mean} / {t.capacity}",
        },
        # Every caller's wait, the timed-out and cancelled ones' too: during a saturation
        # theirs are the longest, and a percentile of the successful ones alone understates it.
        {
            "record": r.wait_p99,
            "expr": "histogram_quantile(0.99, "
            f"{b.without('sum', b.rate(m.CHECKOUT_WAIT, w, '_bucket'), 'outcome')})",
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
        f"{t.where.worker} has had {{{{ $value | humanizePercentage }}}} of its connections in use "
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
        f"{t.where.worker} is full and the callers queued for a connection need about "
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
        f"{t.where.worker} has been at capacity with callers waiting for {cfg.waiting_for}; "
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
        f"{t.where.worker} is full and its queue needs {{{{ $value | humanizePercentage }}}} "
        "of the pool timeout to drain: its last callers will fail with TimeoutError.",
    )


def queue_near_timeout(t: PoolTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolQueueNearTimeout",
        f"{t.names.queue_drain} / {t.timeout} >= {cfg.queue_page_share:g} and {t.busy}",
        cfg.severity_page,
        "Callers queued for a connection pool will soon hit the pool timeout.",
        f"{t.where.worker} is full and its queue needs {{{{ $value | humanizePercentage }}}} "
        "of the pool timeout to drain: checkouts will fail with TimeoutError unless load drops.",
        cfg.page_for,
    )


def checkout_wait_near_timeout(t: PoolTerms) -> Rule:
    cfg = t.cfg
    return alert(
        cfg,
        "SQLAlchemyPoolCheckoutWaitNearTimeout",
        f"{t.names.wait_p99} / {t.build.across_workers('max', t.timeout)} "
        f">= {cfg.wait_page_share:g} "
        f"and ignoring ({WORKER}) {t.waiting} > 0",
        cfg.severity_page,
        "Checkouts wait a large share of the pool timeout.",
        f"{t.where.pool}: the 99th percentile wait for a connection over {cfg.rate_window} "
        "(timed-out callers included) was {{ $value | humanizePercentage }} of the pool "
        "timeout and callers are still waiting.",
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
        f"{t.where.pool}: {{{{ $value | humanize }}}} checkouts/s timed out over the "
        f"last {w}; the application is returning errors.",
    )


def headroom_low(t: PoolTerms) -> Rule:
    cfg = t.cfg
    busiest = f"max_over_time({t.names.utilisation_avg}[{cfg.headroom_window}])"
    return alert(
        cfg,
        "SQLAlchemyPoolHeadroomLow",
        f"{t.build.across_workers('max', busiest)} >= {cfg.headroom_threshold:g}",
        cfg.severity_ticket,
        "A connection pool has little headroom for the next burst.",
        f"{t.where.pool}: its busiest {cfg.rate_window} in the last {cfg.headroom_window} "
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
        f"{t.where.pool}: {{{{ $value | humanizePercentage }}}} of the attempts to open "
        f"a connection failed over the last {cfg.error_window}.",
        cfg.connect_errors_for,
    )


def invalidation_storm(t: PoolTerms) -> Rule:
    cfg = t.cfg
    b = t.build
    invalidated = b.without("sum", b.increase(m.INVALIDATIONS, cfg.error_window), "soft")
    return alert(
        cfg,
        "SQLAlchemyPoolInvalidationStorm",
        f"{invalidated} / {b.across_workers('sum', t.capacity)} >= {cfg.invalidation_share:g}",
        cfg.severity_warning,
        "A connection pool is invalidating many connections.",
        f"{t.where.pool}: connections amounting to {{{{ $value | humanizePercentage }}}} "
        f"of the pool's capacity were invalidated over the last {cfg.error_window} "
        "(database restart, failover or network trouble).",
    )


def overflow_churn(t: PoolTerms) -> Rule:
    cfg, b = t.cfg, t.build
    overflow = b.pool(m.CLOSES, f'reason="{m.OVERFLOW_CLOSE}"')
    discarded = b.without("sum", f"rate({overflow}[{cfg.error_window}])", "reason")
    # Queue pools that may overflow (max_overflow -1 is unbounded): a NullPool closes every
    # connection it gets back, by design, and exports no max_overflow.
    may_overflow = f"{b.pool(m.MAX_OVERFLOW)} != 0"
    return alert(
        cfg,
        "SQLAlchemyPoolOverflowChurn",
        f"{discarded} > {cfg.overflow_churn_per_second:g} and ignoring ({WORKER}) ({may_overflow})",
        cfg.severity_warning,
        "A connection pool keeps opening and discarding overflow connections.",
        f"{t.where.pool} has closed {{{{ $value | humanize }}}} overflow connections/s over "
        f"the last {cfg.error_window} for {cfg.overflow_churn_for}: each was opened beyond "
        "pool_size and closed when it came back to a full pool, a new database connection "
        "every time.",
        cfg.overflow_churn_for,
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
    overflow_churn,
)


def pool_group(cfg: MixinConfig) -> Group:
    t = PoolTerms.of(cfg)
    return {"name": "sqlalchemy-pool", "rules": pool_records(t) + [a(t) for a in POOL_ALERTS]}


# -- connections that stay out ----------------------------------------------------------------


@dataclass(frozen=True)
class HeldTerms(Terms):
    """What the long-checkout alerts share: the pool's own series; per worker for the oldest
    checkout (a gauge), per pool for the counters (served summed over the workers)."""

    def increased(self, metric: m.Metric) -> str:
        return f"{self.build.increase(metric, self.cfg.error_window)} > 0"


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
        f"{t.where.worker} has had a connection checked out for "
        f"{{{{ $value | humanizeDuration }}}}, longer than the pool timeout, for "
        f"{cfg.long_checkout_for}: a leaked session, a transaction left open, or a slow query.",
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
        f"{t.where.pool}: connections were held past long_checkout_threshold in the last "
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
        f"{t.where.pool}: the garbage collector returned connections the application "
        f"never closed in the last {cfg.error_window}; the application's log names where "
        "they were borrowed when long_checkout_threshold is set.",
    )


HELD_ALERTS: tuple[Callable[[HeldTerms], Rule], ...] = (
    checkout_held_past_timeout,
    long_checkouts,
    connections_leaked,
)


def long_checkout_group(cfg: MixinConfig) -> Group:
    """Connections that stay out: held past the pool timeout, past the application's
    long_checkout_threshold, or never returned until the garbage collector found them."""
    t = HeldTerms.of(cfg)
    return {"name": "pool-exporter-long-checkouts", "rules": [a(t) for a in HELD_ALERTS]}
