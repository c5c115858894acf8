"""The sizing model behind `advise`: settings per worker from measured data, and the gate of a
planned push. No argument parsing and no printing: the figures come back as data and the
working as lines, which the command (advise.py) prints with the verdict.

Two questions, one arithmetic (queueing.py for the steady state, simulate.py for a push):
- sizing: what pool_size, max_overflow and pool_timeout should each worker run so that a
  target burst on top of the measured traffic is served without waiting (or, when the
  database cannot afford that, waits a bounded time without timeouts)?
- pre-flight: with the settings running now, how fast can a push pipeline send, and would a
  push to N users cause timeouts?
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from . import queueing, simulate
from .holds import Holds
from .measured import Measured
from .simulate import Prediction, Waits
from .traffic import POISSON, UNIFORM, Push

# A push is at risk when its longest predicted wait comes within this share of the timeout.
MARGIN = 0.25
# How far the mean hold is moved to show how sensitive a prediction is, and the drift a
# recommendation must survive.
HOLD_DRIFT = 0.10
SAFE, AT_RISK, TIMES_OUT = "safe", "at risk", "would time out"


class BadGoal(ValueError):
    """A goal out of its range: `goal` names the field of Goals, `problem` says what is wrong
    (the command says it in the words of its own flags)."""

    def __init__(self, goal: str, problem: str) -> None:
        super().__init__(f"{goal} {problem}")
        self.goal, self.problem = goal, problem


@dataclass(frozen=True)
class Goals:
    p_wait: float = 0.05  # the share of requests that may wait at all
    mean_wait: float = 0.1  # seconds, averaged over every request
    burst_wait: float = 1.0  # the longest any request of a burst may queue
    request_timeout: float = 10.0  # the most a caller can afford to wait for a connection

    def check(self) -> None:
        if not 0 < self.p_wait < 1:
            raise BadGoal("p_wait", f"must be between 0 and 1, got {self.p_wait:g}")
        for goal in ("mean_wait", "burst_wait", "request_timeout"):
            if getattr(self, goal) <= 0:
                raise BadGoal(goal, f"must be positive, got {getattr(self, goal):g}")


@dataclass(frozen=True)
class Target:
    """Extra traffic to plan for, fleet-wide, on top of the measured steady traffic: a
    sustained rate, or a burst of users over a ramp."""

    rate: float = 0.0
    users: int | None = None
    ramp: float = 0.0

    @property
    def burst_rate(self) -> float:
        if self.users is None:
            return self.rate
        return self.users / self.ramp if self.ramp > 0 else math.inf

    def describe(self) -> str:
        if self.users is not None:
            over = f"over {self.ramp:g} s" if self.ramp > 0 else "all at once"
            return f"a push of {self.users} users {over}"
        return f"{self.rate:g} extra requests/s" if self.rate else "the measured traffic only"


@dataclass(frozen=True)
class PoolerAdvice:
    """PgBouncer's settings: server connections per (database, user) pool, clients in all."""

    default_pool_size: int
    max_client_conn: int


@dataclass(frozen=True)
class PushPace:
    """How fast to send a push: users per second, or `batch` users every `every` seconds."""

    rate: float
    batch: int
    every: float


@dataclass
class Advice:
    pool: str
    pools: int
    pool_size: int
    max_overflow: int
    pool_timeout: float
    fleet_connections: int
    database_budget: int | None
    exhausts_database: bool
    predicted_longest_wait: float
    # a push's cost with the chosen settings, and with the other of the two sizes (no-wait,
    # ride-out) beside it: simulated at the chosen pool timeout
    predicted: Prediction | None = None
    no_wait_servers: int | None = None
    ride_out_servers: int | None = None
    alternative: Prediction | None = None
    # behind a pooler (stacksizing.py): its settings, the push's pace where it must be paced,
    # and the predicted waits at each layer
    pooler: PoolerAdvice | None = None
    push: PushPace | None = None
    waits: dict[str, Waits] = field(default_factory=dict)
    working: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def fig(x: float) -> str:
    """A figure as the working shows it: three significant digits, thousands separated."""
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"


def database_budget(measured: Measured, given: int | None) -> int | None:
    """The connections the database has for the fleet: `given` (the user's figure, taken as
    it is) or the measured max_connections less its reserved slots; None when unknown."""
    limit = given if given is not None else measured.db_max_connections
    if limit is None:
        return None
    reserved = measured.db_reserved if given is None and measured.db_reserved is not None else 0
    return limit - reserved


def recommend(
    measured: Measured, target: Target, pools: int, goals: Goals, *, db_max: int | None = None
) -> Advice:
    """Settings per worker for `pools` pools (workers x instances) sharing the traffic: a
    pool_size for the steady traffic, overflow for the target (served without a queue, or a
    push ridden out where that does not fit), and a timeout above the longest predicted wait."""
    goals.check()
    if measured.hold_mean <= 0:
        raise ValueError("the measured mean hold time is 0: no checkouts to size from")
    plan = _Plan(
        s=measured.hold_mean,
        base=measured.peak_rate / pools,
        pools=pools,
        goals=goals,
        holds=measured.holds(),
        hold_p95=measured.hold_p95,
    )
    pool_size = plan.steady(measured.peak_rate)
    extra, servers = plan.no_wait(target, pool_size)
    budget = database_budget(measured, db_max)
    no_wait = servers
    servers, chosen_by = plan.push(target, pool_size, servers, extra, limit=budget)
    exhausts = plan.exhausts(servers, budget)
    worst = plan.longest_wait(target, servers, extra)
    plan.work.append(
        f"chosen   {chosen_by}: c = {servers} = pool_size {pool_size} (steady) + max_overflow "
        f"{servers - pool_size} (the burst)"
    )
    timeout = plan.timeout(measured.hold_p95, worst)
    if chosen_by == "ride-out" and timeout < plan.ride_timeout():
        # the size was found safe at that timeout, not at a shorter one
        timeout = plan.ride_timeout()
        plan.work.append(f"         the ride-out size was found safe at {timeout:g} s: kept")
    predicted = alternative = None
    if plan.ride is not None and target.users is not None:
        other = no_wait if servers == plan.ride else plan.ride
        predicted = plan.cost(target, servers, timeout, "chosen")
        if other != servers and math.isfinite(extra):
            alternative = plan.cost(target, other, timeout, "other")
    return Advice(
        pool=measured.pool,
        pools=pools,
        pool_size=pool_size,
        max_overflow=servers - pool_size,
        pool_timeout=timeout,
        fleet_connections=servers * pools,
        database_budget=budget,
        exhausts_database=exhausts,
        predicted_longest_wait=worst,
        predicted=predicted,
        no_wait_servers=no_wait if math.isfinite(extra) else None,
        ride_out_servers=plan.ride,
        alternative=alternative,
        working=plan.work,
        warnings=plan.warn,
    )


@dataclass
class _Plan:
    """The steps of `recommend`, each writing its working; `s` is the mean hold time and
    `base` the steady rate per pool."""

    s: float
    base: float
    pools: int
    goals: Goals
    holds: Holds
    work: list[str] = field(default_factory=list)
    warn: list[str] = field(default_factory=list)
    hold_p95: float | None = None
    ride: int | None = None  # the ride-out size, once worked out
    ride_wait: float = 0.0  # its longest wait at the drifted hold

    def _push(self, target: Target) -> Push:
        users = target.users or 0
        return per_pool_push(users / self.pools, target.ramp, self.pools)

    def steady(self, peak_rate: float) -> int:
        """The pool_size that serves the busiest steady stretch within the wait goals."""
        return steady_size(peak_rate, self.s, self.pools, self.goals, self.work)

    def no_wait(self, target: Target, pool_size: int) -> tuple[float, int]:
        """The target's extra rate per pool and the connections that serve it without a queue
        (inf and the steady size for a push all at once: nothing serves that unqueued)."""
        s, base, goals = self.s, self.base, self.goals
        extra = target.burst_rate / self.pools
        if target.users is not None and target.ramp == 0:
            extra = math.inf
        if not math.isfinite(extra):
            self.work.append(f"target   {target.describe()}: no pool serves that without a queue")
            return extra, pool_size
        a_peak = queueing.offered_load(base + extra, s)
        self.work.append(
            f"target   {target.describe()}: {fig(target.burst_rate)} req/s / {self.pools} = "
            f"{fig(extra)} per pool; A = ({fig(base)} + {fig(extra)}) x {fig(s)} = {fig(a_peak)}"
        )
        nowait = queueing.smallest_pool(
            a_peak, s, p_wait=goals.p_wait, max_mean_wait=goals.mean_wait
        )
        self.work.append(_erlang_line(nowait, s, goals))
        if target.users is None:
            return extra, max(pool_size, nowait.servers)
        least = max(pool_size, math.floor(a_peak) + 1)  # fewer cannot keep up at all
        return extra, self._push_no_wait(target, least, nowait.servers)

    def _push_no_wait(self, target: Target, least: int, erlang: int) -> int:
        """The smallest pool from `least` up whose simulated push keeps the wait goals over
        the push's own requests. Erlang C holds the push's rate up forever and takes it as a
        Poisson stream; a push lasts seconds and its users arrive evenly spaced (at random
        for one pool of several), which needs fewer connections than that."""
        goals, timeout = self.goals, self.ride_timeout()

        def keeps(c: int) -> Prediction | None:
            p = self._simulated(target, c, timeout, 0.0)
            met = p.push_waited <= goals.p_wait and p.push_mean_wait <= goals.mean_wait
            return p if met else None

        high, found = smallest(keeps, least, first=max(least, erlang))
        self.work.append(
            f"         simulated, {fig((target.users or 0) / self.pools)} users per pool over "
            f"{target.ramp:g} s: c = {high} is the smallest pool with at most "
            f"{goals.p_wait:.0%} of them waiting ({found.push_waited:.1%}) and W = "
            f"{fig(found.push_mean_wait)} s ≤ {goals.mean_wait:g} s over them, in the "
            f"median of {found.runs} runs: the no-wait size"
        )
        return high

    def push(
        self,
        target: Target,
        pool_size: int,
        servers: int,
        extra: float,
        *,
        limit: int | None,
    ) -> tuple[int, str]:
        """For a push: the connections that let its queue drain within the burst-wait goal,
        chosen instead of `servers` when those exceed the database's `limit` or cannot
        exist."""
        if target.users is None:
            return servers, "no-wait"
        pools, wait = self.pools, self.goals.burst_wait
        ride, p = self._ride_out(target, least=pool_size)
        self.ride, self.ride_wait = ride, p.longest_wait
        b = queueing.burst(target.users / pools, target.ramp, ride, self.s, self.base)
        self.work.append(
            f"ride-out the push queues instead: {fig(target.users / pools)} users per pool over "
            f"{target.ramp:g} s; simulated {p.runs} times with holds {HOLD_DRIFT:.0%} longer "
            f"and pool_timeout {p.timeout:g} s, c = {ride} is the smallest pool with no "
            f"timeout in any run, the longest wait {fig(p.longest_wait)} s ≤ {wait:g} s (up to "
            f"{fig(p.longest_wait_high)} s) and not within {MARGIN:.0%} of the timeout"
            f"{' (c = ' + str(ride - 1) + ' is not)' if ride > pool_size else ''}; a first "
            f"come, first served fluid queue would say the last waits {fig(b.longest_wait)} s"
        )
        over_limit = limit is not None and servers * pools > limit
        if not over_limit and math.isfinite(extra):
            # Erlang C's no-wait size, unless the simulated push needs more even to ride out
            return max(servers, ride), "no-wait"
        if over_limit and math.isfinite(extra):
            self.work.append(
                f"database no-wait needs {pools} x {servers} = {servers * pools} "
                f"connections, more than the {limit} available: ride the push out instead"
            )
        return max(ride, pool_size), "ride-out"

    def exhausts(self, servers: int, budget: int | None) -> bool:
        """Whether the fleet of `servers` per pool exhausts the database, with a warning."""
        fleet = servers * self.pools
        if budget is None or fleet <= budget:
            return False
        self.warn.append(
            f"{self.pools} pools x {servers} = {fleet} connections exhaust the database "
            f"({budget} available); at most {budget // self.pools} per pool fit: split the "
            "push (see --preflight) or put a pooler in front of the database"
        )
        return True

    def longest_wait(self, target: Target, servers: int, extra: float) -> float:
        """The longest a caller waits with `servers` connections: a push's queue draining, or
        the 1-in-10,000 wait of steady traffic."""
        if target.users is not None:
            if servers == self.ride:
                return self.ride_wait
            return self._simulated(target, servers, self.ride_timeout()).longest_wait
        a = queueing.offered_load(self.base + (extra if math.isfinite(extra) else 0.0), self.s)
        return queueing.wait_quantile(servers, a, self.s, 1e-4)

    def _simulated(
        self, target: Target, servers: int, timeout: float, drift: float = HOLD_DRIFT
    ) -> Prediction:
        return simulate.predict(
            self._push(target),
            self.holds,
            servers=servers,
            timeout=timeout,
            rate=self.base,
            hold_factor=1 + drift,
        )

    def _ride_out(self, target: Target, *, least: int) -> tuple[int, Prediction]:
        """The smallest pool from `least` up that the gate calls safe with holds HOLD_DRIFT
        longer than measured, at the pool timeout a ride-out gets (`ride_timeout`), and
        whose median run's longest wait meets the burst-wait goal: a size with room, not
        the edge where the first timeout appears."""
        timeout = self.ride_timeout()

        def fits(c: int) -> Prediction | None:
            p = self._simulated(target, c, timeout)
            ok = verdict(p) == SAFE and p.longest_wait <= self.goals.burst_wait
            return p if ok else None

        return smallest(fits, least, first=least)

    def ride_timeout(self) -> float:
        """The pool timeout for riding a push out: twice the burst-wait goal, at least 2 s
        and three hold p95s, at most the request budget."""
        p95 = self.hold_p95 if self.hold_p95 and math.isfinite(self.hold_p95) else 3 * self.s
        wanted = float(math.ceil(max(2.0, 2 * self.goals.burst_wait, 3 * p95)))
        return min(self.goals.request_timeout, wanted)

    def cost(self, target: Target, servers: int, timeout: float, which: str) -> Prediction:
        """What the push costs with `servers` connections and this timeout, at the measured
        hold and HOLD_DRIFT either side."""
        p = self._simulated(target, servers, timeout, 0.0)
        slower = self._simulated(target, servers, timeout)
        name = {self.ride: "ride-out"}.get(servers, "no-wait")
        self.work.append(
            f"cost     {which} {name} c = {servers}, pool_timeout {timeout:g} s: waits median "
            f"{fig(p.wait_p50)} s, p99 {fig(p.wait_p99)} s, longest {fig(p.longest_wait)} s "
            f"(up to {fig(p.longest_wait_high)} s in {p.runs} runs); timeouts "
            f"{_range(p)}, {_range(slower)} with holds {HOLD_DRIFT:.0%} longer"
        )
        return p

    def timeout(self, hold_p95: float | None, worst: float) -> float:
        """A pool timeout well above the longest predicted wait and the slowest holds, capped
        at the request budget."""
        goals = self.goals
        p95 = hold_p95 if hold_p95 and math.isfinite(hold_p95) else 3 * self.s
        timeout = float(math.ceil(max(2.0, 2 * worst, 3 * p95)))
        if timeout > goals.request_timeout:
            self.warn.append(
                f"requests may wait {fig(worst)} s for a connection, more than half the "
                f"{goals.request_timeout:g} s request budget: the pool timeout is capped there"
            )
            timeout = goals.request_timeout
        self.work.append(
            f"timeout  max(2 s, 2 x longest predicted wait {fig(worst)} s, 3 x hold p95 "
            f"{fig(p95)} s) = {timeout:g} s, at most the request budget {goals.request_timeout:g} s"
        )
        return timeout


def steady_size(
    rate: float,
    s: float,
    pools: int,
    goals: Goals,
    work: list[str],
    *,
    what: str = "busiest stretch",
) -> int:
    """The pool_size that serves `rate` (the fleet's) over `pools` pools within the wait
    goals, holds of `s` seconds on average; its working appended to `work`."""
    base = rate / pools
    work.append(
        f"steady   λ = {fig(rate)} req/s ({what}) / {pools} pools = {fig(base)} req/s per "
        f"pool; S = {fig(s)} s mean hold"
    )
    a_base = queueing.offered_load(base, s)
    chosen = queueing.smallest_pool(a_base, s, p_wait=goals.p_wait, max_mean_wait=goals.mean_wait)
    work.append(
        f"         Little's law A = λ·S = {fig(base)} x {fig(s)} = {fig(a_base)} connections busy"
    )
    work.append(_erlang_line(chosen, s, goals))
    return max(1, chosen.servers)


def smallest(
    fits: Callable[[int], Prediction | None], least: int, *, first: int
) -> tuple[int, Prediction]:
    """The smallest pool from `least` up that `fits` (its prediction, or None), trying `first`
    before doubling, then bisecting: a few dozen runs per size tried. Bisection takes a larger
    pool to fit wherever a smaller one does, which the simulations make likely by using the
    same seeds, so the same arrivals, holds and wake-ups, for every size."""
    low, high = max(1, least), max(1, least, first)
    found = fits(high)
    while found is None:
        low, high = high + 1, high * 2
        found = fits(high)
    while low < high:
        mid = (low + high) // 2
        p = fits(mid)
        if p is None:
            low = mid + 1
        else:
            high, found = mid, p
    return high, found


def _erlang_line(chosen: queueing.Servers, s: float, goals: Goals) -> str:
    text = (
        f"         Erlang C: c = {chosen.servers} gives P(wait) = {chosen.p_wait:.1%} ≤ "
        f"{goals.p_wait:.0%} and W = {fig(chosen.mean_wait)} s ≤ {goals.mean_wait:g} s"
    )
    smaller = chosen.servers - 1
    if smaller >= 1:
        pw = queueing.erlang_c(smaller, chosen.load)
        w = queueing.mean_wait(smaller, chosen.load, s)
        text += f"; c = {smaller} gives {pw:.1%}, W = {fig(w)} s"
    return text


def _range(p: Prediction) -> str:
    if p.timeouts_low == p.timeouts_high:
        return f"{p.timeouts_low}"
    return f"{fig(p.timeouts)} ({p.timeouts_low}-{p.timeouts_high})"


@dataclass
class Preflight:
    pool: str
    safe_rate: float  # users per second the fleet absorbs without waiting (beyond p_wait)
    verdict: str  # SAFE, AT_RISK or TIMES_OUT
    predicted_timeouts: float  # the simulation's median, fleet-wide
    longest_wait: float  # the median run's longest wait
    prediction: Prediction  # per pool, at the measured hold
    shorter: Prediction  # holds HOLD_DRIFT shorter
    longer: Prediction  # holds HOLD_DRIFT longer
    fluid_longest_wait: float  # first come, first served as a fluid queue
    margin: float
    batches: int
    batch_users: int
    batch_interval: float
    working: list[str] = field(default_factory=list)

    @property
    def safe(self) -> bool:
        return self.verdict == SAFE


def per_pool_push(users: float, ramp: float, pools: int) -> Push:
    """One pool's share of a push. Spread over several pools (a load balancer's choice per
    request), a pool's arrivals are no longer evenly spaced but fall at random in the ramp."""
    return Push(max(1, round(users)), ramp, UNIFORM if pools == 1 else POISSON)


def verdict(p: Prediction, *, margin: float = MARGIN) -> str:
    """Would time out: the median run has timeouts. At risk: some run has, or the median
    run's longest wait comes within `margin` of the timeout. Safe otherwise."""
    if p.times_out:
        return TIMES_OUT
    if p.may_time_out or p.longest_wait >= (1 - margin) * p.timeout:
        return AT_RISK
    return SAFE


def preflight(
    measured: Measured,
    pools: int,
    goals: Goals,
    *,
    users: int,
    ramp: float,
    requests_per_user: float,
    settings: tuple[int, int, float],
) -> Preflight:
    """Would a push to `users` over `ramp` seconds, with the pools as they are now, time out?"""
    goals.check()
    size, overflow, timeout = settings
    c = size + overflow
    s = measured.hold_mean
    base = measured.peak_rate / pools
    work = [
        f"now      {pools} pools x (pool_size {size} + max_overflow {overflow}) = "
        f"{pools * c} connections, pool_timeout {timeout:g} s",
        f"steady   λ = {fig(measured.peak_rate)} req/s / {pools} = {fig(base)} per pool; "
        f"S = {fig(s)} s; Little's law A = λ·S = {fig(base * s)} of {c} connections busy",
    ]
    extra = queueing.max_rate(c, s, p_wait=goals.p_wait, base_rate=base)
    safe_rate = extra * pools / requests_per_user
    work.append(
        f"safe     the most λ with Erlang C(c={c}, A=λ·S) ≤ {goals.p_wait:.0%} is "
        f"{fig(base + extra)} req/s per pool: {fig(extra)} more x {pools} pools / "
        f"{requests_per_user:g} requests per user = {fig(safe_rate)} users/s (steady state)"
    )
    per_pool = users * requests_per_user / pools
    push = per_pool_push(per_pool, ramp, pools)
    holds = measured.holds()

    def run(drift: float) -> Prediction:
        return simulate.predict(
            push, holds, servers=c, timeout=timeout, rate=base, hold_factor=1 + drift
        )

    p, shorter, longer = run(0.0), run(-HOLD_DRIFT), run(HOLD_DRIFT)
    b = queueing.burst(per_pool, ramp, c, s, base)
    over = f"over {ramp:g} s" if ramp > 0 else "at once"
    work.append(
        f"fluid    {users} users {over} = {fig(per_pool)} requests per pool, first come first "
        f"served: {fig(b.capacity)} req/s beside the steady traffic, backlog {fig(b.backlog)}, "
        f"the last waits {fig(b.longest_wait)} s"
    )
    work.append(
        f"simulated QueuePool (a woken caller can lose the connection to a newcomer), "
        f"{p.runs} runs: timeouts {_range(p)} per pool; waits median {fig(p.wait_p50)} s, "
        f"p99 {fig(p.wait_p99)} s, longest {fig(p.longest_wait)} s (up to "
        f"{fig(p.longest_wait_high)} s)"
    )
    work.append(
        f"hold ±{HOLD_DRIFT:.0%} mean hold {fig(s * (1 - HOLD_DRIFT))} s: timeouts "
        f"{_range(shorter)}; {fig(s * (1 + HOLD_DRIFT))} s: {_range(longer)}"
    )
    # a batch every pool can start within the burst-wait goal, then the next once it drains
    free = max(0.0, c - base * s)
    per_batch = max(1.0, math.floor(free + b.capacity * goals.burst_wait))
    batch_users = max(1, math.floor(per_batch * pools / requests_per_user))
    batches = max(1, math.ceil(users / batch_users))
    interval = per_batch / b.capacity if b.capacity > 0 else math.inf
    work.append(
        f"batches  {fig(free)} free + {fig(b.capacity)} req/s x {goals.burst_wait:g} s = "
        f"{fig(per_batch)} requests per pool start within {goals.burst_wait:g} s: "
        f"{batches} batches of {batch_users} users, one every {fig(interval)} s"
    )
    return Preflight(
        pool=measured.pool,
        safe_rate=safe_rate,
        verdict=verdict(p),
        predicted_timeouts=p.timeouts * pools,
        longest_wait=p.longest_wait,
        prediction=p,
        shorter=shorter,
        longer=longer,
        fluid_longest_wait=b.longest_wait,
        margin=MARGIN,
        batches=batches,
        batch_users=batch_users,
        batch_interval=interval,
        working=work,
    )
