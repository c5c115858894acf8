"""Sizing behind a pooler: the app pools, the pooler and the database sized together.

Behind PgBouncer in transaction mode a connection's hold is the database's time plus the wait
for one of the pooler's server connections, and that wait grows with the app pools: past the
pooler's pool, larger app pools only move the queue into the pooler, where no pool_timeout
bounds it. The capacity that serves a push is the pooler's server connections, bounded in
turn by the database's budget: max_connections less its reserved slots and the connections
of its other clients, and the pooled databases' own CONNECTION LIMIT. So `recommend()` sizes
the three together, each candidate simulated on the whole stack (stacksim.py):

1. pool_size per worker for the steady traffic (Erlang C on the database's time);
2. the pooler's pool: the smallest, from today's up to the database's budget, with which the
   push is served within the deadline (the pool timeout users have today) with no timeout
   and no late request in any run, the database's times 10% longer than measured; the app
   pools are never the bottleneck (in transaction mode each worker may use every server
   connection, however the push falls between workers; in session mode the fleet's
   connections are the pooler's);
3. where even the whole budget cannot serve the push at once: the fastest pace that does.

The service time is the database's time per transaction, measured: PgBouncer's SHOW STATS
through the sidecar, or the app's hold less the pooler's wait; never the app's hold taken as
fixed, which includes the wait this sizing removes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from . import queueing
from .holds import Holds
from .measured import Measured
from .pooler import SESSION, TRANSACTION, Pooler
from .simulate import Prediction
from .sizing import (
    HOLD_DRIFT,
    MARGIN,
    SAFE,
    Advice,
    Goals,
    PoolerAdvice,
    Preflight,
    PushPace,
    Target,
    database_budget,
    fig,
    smallest,
    steady_size,
    verdict,
)
from .stacksim import predict_stack
from .traffic import Push

# Bisection steps for the fastest safe pace, from half the capacity up: within 1% of it.
PACE_STEPS = 6


@dataclass(frozen=True)
class Stack:
    """The layers behind the app pools, as measured (or given by flags)."""

    mode: str  # transaction (statement pooling counts as such) or session
    servers: int  # the pooler's server connections today
    max_client_conn: int | None
    reserve_pool: int
    budget: int | None  # the database's connections for the pooler
    service: Holds  # the database's time per transaction


def stack_of(measured: Measured, db_max: int | None, work: list[str]) -> Stack:
    """The stack behind `measured`'s pools; its working appended to `work`."""
    pooler = measured.pooler
    if pooler is None:
        raise ValueError("no pooler was measured or given")
    if pooler.pool_size is None:
        raise ValueError("the pooler's pool size is not known: give --pooler-pool-size")
    budget = database_budget(measured, db_max)
    parts = []
    if budget is not None:
        given = db_max is not None
        parts.append(f"{budget} given" if given else f"{budget} of max_connections less reserved")
        if measured.db_others:
            budget -= measured.db_others
            parts.append(f"less {measured.db_others} held by other clients")
    if measured.db_limit is not None:
        parts.append(f"the pooled database's CONNECTION LIMIT {measured.db_limit}")
        budget = measured.db_limit if budget is None else min(budget, measured.db_limit)
    work.append(
        f"database budget for the pooler: {budget} ({', '.join(parts)})"
        if budget is not None
        else "database budget unknown (--database-max-connections): the pooler is not raised"
    )
    if measured.service_time is not None:
        s, source = measured.service_time, f"{measured.service_source}, per transaction"
    elif measured.pooler_wait is not None:
        s = max(1e-6, measured.hold_mean - measured.pooler_wait)
        source = f"the app's hold {fig(measured.hold_mean)} s less the pooler's wait"
    else:
        s, source = measured.hold_mean, "the app's hold (no pooler statistics: waits included)"
    work.append(f"database time S = {fig(s)} s per transaction, from {source}")
    mode = SESSION if pooler.mode == SESSION else TRANSACTION
    return Stack(
        mode,
        pooler.pool_size,
        pooler.max_client_conn,
        pooler.reserve_pool,
        budget,
        replace(measured.holds(), mean=s),
    )


@dataclass
class _Sizer:
    """The steps of `recommend`: `rate` is the fleet's steady traffic, `deadline` the longest
    any request may wait in all."""

    stack: Stack
    pools: int
    pool_size: int
    rate: float
    deadline: float
    work: list[str]
    warn: list[str] = field(default_factory=list)
    top: int = field(init=False)

    def __post_init__(self) -> None:
        budget, today = self.stack.budget, self.stack.servers
        if budget is not None and budget < today:
            self.warn.append(
                f"the pooler may open {today} server connections, more than the database's "
                f"{budget} for it: lower its pool_size (or set max_db_connections) to {budget}"
            )
        # the most server connections the pooler may have: the database's budget (today's
        # pool when that is unknown)
        self.top = today if budget is None else max(1, budget)

    @property
    def s(self) -> float:
        return self.stack.service.mean

    def app_servers(self, servers: int) -> int:
        """Each worker's connections with a pooler of `servers`: all of them in transaction
        mode (an app connection costs the database nothing until it runs a transaction), a
        worker's share in session mode (each app connection keeps a server connection)."""
        if self.stack.mode == SESSION:
            return max(1, servers // self.pools)
        return servers

    def predict(self, push: Push, servers: int, timeout: float, drift: float) -> Prediction:
        c = self.app_servers(servers)
        return predict_stack(
            push,
            Pooler(servers, self.stack.service, self.stack.mode),
            pools=self.pools,
            servers=c,
            pool_size=min(self.pool_size, c),
            timeout=timeout,
            rate=self.rate,
            hold_factor=1 + drift,
        )

    def safe(self, push: Push, servers: int) -> Prediction | None:
        """The prediction with `servers` when the gate calls it safe at the deadline, with
        database times HOLD_DRIFT longer; None otherwise."""
        p = self.predict(push, servers, self.deadline, HOLD_DRIFT)
        return p if verdict(p) == SAFE else None

    def moved(self, push: Push) -> None:
        """Why larger app pools are no answer when the pooler's pool today is too small."""
        today = self.stack.servers
        least = push.users * self.s / today
        if least > self.deadline:
            self.work.append(
                f"app pools {push.users} x {fig(self.s)} s of database time on the pooler's "
                f"{today} server connections take at least {fig(least)} s, past the "
                f"{self.deadline:g} s deadline: larger app pools would only move the queue "
                "into the pooler, where no pool_timeout bounds it: not recommended"
            )

    def pooler_for(self, push: Push) -> tuple[int, Prediction] | None:
        """The smallest pooler from today's up to the budget that serves `push`, or None."""
        top = self.top
        if self.safe(push, top) is None:
            self.work.append(
                f"pooler   even {top} server connections (the budget) do not serve "
                f"{push.users} users at once within {self.deadline:g} s"
            )
            return None
        lowest = min(self.stack.servers, top)

        def fits(c: int) -> Prediction | None:
            return self.safe(push, min(c, top))

        servers, p = smallest(fits, lowest, first=lowest)
        servers = min(servers, top)
        self.work.append(
            f"pooler   {servers} server connections is the smallest pool from today's "
            f"{self.stack.servers} with no timeout and no request waiting past "
            f"{self.deadline:g} s in any of {p.runs} simulated runs (database times "
            f"{HOLD_DRIFT:.0%} longer): the longest wait {fig(p.longest_wait)} s"
        )
        return servers, p

    def pace(self, users: int, servers: int) -> tuple[PushPace, Push, Prediction]:
        """The fastest pace at which `servers` serve the push safely (bisection on the rate
        up to their capacity), rounded down to two significant figures."""
        capacity = servers / (self.s * (1 + HOLD_DRIFT)) - self.rate
        if capacity <= 0:
            raise ValueError(
                f"{servers} server connections cannot keep up with the steady traffic alone "
                f"({fig(self.rate)} req/s x {fig(self.s)} s): no pace serves a push"
            )

        def serves(rate: float) -> Prediction | None:
            return self.safe(Push(users, users / rate), servers)

        low, high = capacity / 2, capacity
        while (chosen := serves(low)) is None:
            low, high = low / 2, low
            if low < capacity / 1000:
                raise ValueError("no pace serves the push within the deadline")
        for _ in range(PACE_STEPS):
            mid = (low + high) / 2
            if (found := serves(mid)) is not None:
                low, chosen = mid, found
            else:
                high = mid
        rate = _round_down(low)
        rounded = serves(rate)  # a little slower; kept unrounded should it not be safe
        rate, chosen = (rate, rounded) if rounded is not None else (low, chosen)
        batch = max(1, math.floor(rate))
        self.work.append(
            f"pace     {servers} server connections serve {fig(servers / self.s)} "
            f"transactions/s ({fig(capacity)} with times {HOLD_DRIFT:.0%} longer, less the "
            f"steady traffic); the fastest safe pace is {fig(rate)} users/s: {users} users "
            f"over {fig(users / rate)} s, or {batch} users every second"
        )
        return PushPace(rate, batch, 1.0), Push(users, users / rate), chosen

    def timeout(self, push: Push, servers: int, longest: float, hold_p95: float) -> float:
        """As sizing.py's: twice the longest wait or three hold p95s, at least 2 s, at most
        the deadline; the deadline itself if the push is not safe at the shorter one."""
        timeout = min(self.deadline, float(math.ceil(max(2.0, 2 * longest, 3 * hold_p95))))
        if timeout < self.deadline:
            p = self.predict(push, servers, timeout, HOLD_DRIFT)
            if verdict(p) != SAFE:
                timeout = self.deadline
        self.work.append(
            f"timeout  max(2 s, 2 x longest wait {fig(longest)} s, 3 x hold p95 "
            f"{fig(hold_p95)} s), at most the deadline {self.deadline:g} s: {timeout:g} s"
        )
        return timeout


def recommend(
    measured: Measured, target: Target, pools: int, goals: Goals, *, db_max: int | None = None
) -> Advice:
    """Settings for the app pools (per worker), the pooler and the push's pace, for `pools`
    pools behind the pooler `measured` saw; the deadline is `goals.request_timeout`."""
    goals.check()
    if measured.hold_mean <= 0:
        raise ValueError("the measured mean hold time is 0: no checkouts to size from")
    work: list[str] = []
    stack = stack_of(measured, db_max, work)
    steady = measured.steady
    pool_size = steady_size(steady, stack.service.mean, pools, goals, work, what="typical stretch")
    sizer = _Sizer(stack, pools, pool_size, steady, goals.request_timeout, work)
    p95 = (measured.hold_p95 or 3 * measured.hold_mean) * stack.service.mean / measured.hold_mean
    pace: PushPace | None = None
    predicted: Prediction | None = None
    if target.users is None:
        servers = _steady_pooler(sizer, target, goals)
        c = min(sizer.app_servers(servers), max(pool_size, _per_pool(sizer, target, goals)))
        timeout = min(sizer.deadline, float(math.ceil(max(2.0, 3 * p95))))
    else:
        push = Push(target.users, target.ramp)
        sizer.moved(push)
        found = sizer.pooler_for(push)
        if found is None:
            servers = sizer.top
            pace, push, chosen = sizer.pace(target.users, servers)
        else:
            servers, chosen = found
        c = sizer.app_servers(servers)
        timeout = sizer.timeout(push, servers, chosen.longest_wait, p95)
        predicted = sizer.predict(push, servers, timeout, 0.0)
        slower = sizer.predict(push, servers, timeout, HOLD_DRIFT)
        work.append(_cost(predicted, slower))
    pool_size = min(pool_size, c)
    fleet = pools * c
    clients = stack.max_client_conn
    if clients is None or clients < fleet:
        clients = _round_up(fleet)
        sizer.warn.append(
            f"the fleet opens up to {pools} x {c} = {fleet} client connections: raise the "
            f"pooler's max_client_conn to {clients}"
        )
    exhausts = stack.budget is not None and servers + stack.reserve_pool > stack.budget
    if exhausts:
        sizer.warn.append(
            f"the pooler's {servers} server connections and reserve_pool {stack.reserve_pool} "
            f"exceed the database's {stack.budget}: lower reserve_pool_size"
        )
    work.append(
        f"chosen   per worker c = {c} = pool_size {pool_size} + max_overflow {c - pool_size}; "
        f"the pooler's pool {servers} (today {stack.servers})"
        + (f"; the push paced at {fig(pace.rate)} users/s" if pace else "")
    )
    return Advice(
        pool=measured.pool,
        pools=pools,
        pool_size=pool_size,
        max_overflow=c - pool_size,
        pool_timeout=timeout,
        fleet_connections=fleet,
        database_budget=stack.budget,
        exhausts_database=exhausts,
        predicted_longest_wait=predicted.longest_wait if predicted else 0.0,
        predicted=predicted,
        working=work,
        warnings=sizer.warn,
        pooler=PoolerAdvice(servers, clients),
        push=pace,
        waits=dict(predicted.layers) if predicted else {},
    )


def _steady_pooler(sizer: _Sizer, target: Target, goals: Goals) -> int:
    """The pooler's pool for steady traffic (and `target.rate` more): Erlang C on the
    database's time, never below today's, at most the budget."""
    load = queueing.offered_load(sizer.rate + target.rate, sizer.s)
    need = queueing.smallest_pool(
        load, sizer.s, p_wait=goals.p_wait, max_mean_wait=goals.mean_wait
    ).servers
    top = sizer.top
    if need > top:
        sizer.warn.append(
            f"the traffic needs {need} server connections, more than the database's {top}"
        )
    servers = min(top, max(sizer.stack.servers, need))
    sizer.work.append(
        f"pooler   A = {fig(sizer.rate + target.rate)} req/s x {fig(sizer.s)} s = {fig(load)}: "
        f"Erlang C needs {need} server connections; the pool: {servers}"
    )
    return servers


def _per_pool(sizer: _Sizer, target: Target, goals: Goals) -> int:
    load = queueing.offered_load((sizer.rate + target.rate) / sizer.pools, sizer.s)
    return queueing.smallest_pool(
        load, sizer.s, p_wait=goals.p_wait, max_mean_wait=goals.mean_wait
    ).servers


def _cost(p: Prediction, slower: Prediction) -> str:
    layers = "; ".join(
        f"{name} median {fig(w.p50)} s, p99 {fig(w.p99)} s, longest {fig(w.longest)} s"
        for name, w in p.layers.items()
    )
    return (
        f"cost     waits {layers}; in all longest {fig(p.longest_wait)} s (up to "
        f"{fig(p.longest_wait_high)} s in {p.runs} runs); timeouts {p.timeouts_high}, late "
        f"{p.late_high} in any run; with times {HOLD_DRIFT:.0%} longer: timeouts "
        f"{slower.timeouts_high}, late {slower.late_high}, longest {fig(slower.longest_wait)} s"
    )


def _round_down(x: float) -> float:
    """`x` rounded down to two significant figures."""
    step = 10.0 ** (math.floor(math.log10(x)) - 1)
    return float(math.floor(x / step) * step)


def _round_up(n: int) -> int:
    """`n` rounded up to a multiple of 10."""
    return -(-n // 10) * 10


def preflight(
    measured: Measured,
    pools: int,
    goals: Goals,
    *,
    users: int,
    ramp: float,
    requests_per_user: float,
    settings: tuple[int, int, float],
    db_max: int | None = None,
) -> Preflight:
    """Would a push to `users` over `ramp` seconds, with the pools and the pooler as they are
    now, time out or wait past the pool timeout anywhere in the stack?"""
    goals.check()
    size, overflow, timeout = settings
    work: list[str] = []
    stack = stack_of(measured, db_max, work)
    s = stack.service.mean
    steady = measured.steady
    requests = max(1, round(users * requests_per_user))
    push = Push(requests, ramp)
    pooler = Pooler(stack.servers, stack.service, stack.mode)

    def run(drift: float) -> Prediction:
        return predict_stack(
            push,
            pooler,
            pools=pools,
            servers=size + overflow,
            pool_size=size,
            timeout=timeout,
            rate=steady,
            hold_factor=1 + drift,
        )

    p, shorter, longer = run(0.0), run(-HOLD_DRIFT), run(HOLD_DRIFT)
    capacity = min(pools * (size + overflow), stack.servers) / s - steady
    safe_rate = max(0.0, capacity) / requests_per_user
    work.append(
        f"now      {pools} pools x ({size} + {overflow}), pool_timeout {timeout:g} s; the "
        f"pooler's {stack.servers} server connections ({stack.mode} mode); capacity "
        f"{fig(capacity)} transactions/s beside the steady {fig(steady)}"
    )
    work.append(_cost(p, longer))
    batch = max(1, math.floor(safe_rate))
    return Preflight(
        pool=measured.pool,
        safe_rate=safe_rate,
        verdict=verdict(p),
        predicted_timeouts=p.timeouts + p.late,
        longest_wait=p.longest_wait,
        prediction=p,
        shorter=shorter,
        longer=longer,
        fluid_longest_wait=max(0.0, requests * s / stack.servers - s),
        margin=MARGIN,
        batches=max(1, math.ceil(users / batch)),
        batch_users=batch,
        batch_interval=1.0,
        working=work,
    )
