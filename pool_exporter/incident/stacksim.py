"""A push against the whole stack, simulated: every worker's QueuePool, the pooler they share
and the database behind it, on one clock.

A request waits for its worker's pool (QueuePool's wake-ups, queuepool.py; its pool_timeout),
then, behind a pooler in transaction mode, for one of the pooler's server connections (first
come, first served, pooler.py), and holds both for the database's time. In session mode the
server connection comes with the app's connection: a checkout that opens a connection waits
for one, and it is given back when the pool closes that connection. Each wait is counted at
the layer where it happens, and a request that waits past the pool timeout in all counts as
late: served, but later than the timeout it was meant to bound.

The push's users, and the steady traffic, fall on the workers at random, as a load balancer
or the workers' accept() race spreads them.
"""

from __future__ import annotations

import random

from .clock import Clock
from .pooler import SESSION, Pooler, PoolerModel
from .queuepool import SERVED, QueuePoolModel
from .simulate import RUNS, WAKE, WAKE_SPREAD, Prediction, Run, Waits, outcome, repeat, window
from .traffic import Push, steady

POOL, POOLER = "pool", "pooler"


def simulate_stack(
    push: Push,
    pooler: Pooler,
    rng: random.Random,
    *,
    pools: int,
    servers: int,
    pool_size: int,
    timeout: float,
    rate: float,
    wake: float = WAKE,
    hold_factor: float = 1.0,
) -> Run:
    """One run: `push` (the fleet's) on top of `rate` steady requests per second (the
    fleet's) against `pools` pools of `servers` connections (`pool_size` of them kept) with
    this pool timeout, behind `pooler`; the database's times scaled by `hold_factor`."""
    if pools < 1 or servers < 1 or timeout <= 0 or rate < 0:
        raise ValueError("a stack needs a pool, a connection each, a positive timeout, rate >= 0")
    draw = pooler.service.sampler(rng, hold_factor)
    start, end = window(push, timeout, pooler.service.mean * hold_factor)
    callers = sorted(
        [(at, True) for at in push.arrivals(rng)]
        + [(at, False) for at in steady(rate, start, end, rng)]
    )
    arrivals = [at for at, _ in callers]
    owner = [rng.randrange(pools) for _ in arrivals]
    clock = Clock()
    bouncer = PoolerModel(pooler.servers, len(arrivals))
    session = pooler.mode == SESSION

    def begin(now: float, caller: int) -> None:  # on a server connection: the database's time
        clock.at(now + draw(), finish, caller)

    def finish(now: float, caller: int) -> None:
        if not session:
            bouncer.release(now)
        apps[owner[caller]].release(now, caller)

    def granted(now: float, caller: int) -> None:
        if session and not apps[owner[caller]].opened[caller]:
            begin(now, caller)  # a kept connection keeps its server connection
        else:
            bouncer.acquire(now, caller, begin)

    apps = [
        QueuePoolModel(
            clock,
            rng,
            arrivals,
            granted,
            servers=servers,
            timeout=timeout,
            wake=wake,
            pool_size=pool_size,
            closed=bouncer.release if session else None,
        )
        for _ in range(pools)
    ]
    for caller, at in enumerate(arrivals):
        clock.at(at, apps[owner[caller]].arrive, caller)
    clock.run()

    app_waits = [apps[owner[k]].waits[k] for k in range(len(arrivals))]
    served = [k for k in range(len(arrivals)) if apps[owner[k]].state[k] == SERVED]
    total = [a + b for a, b in zip(app_waits, bouncer.waits, strict=True)]
    queued = bytearray(
        apps[owner[k]].queued[k] or bouncer.waits[k] > 0 for k in range(len(arrivals))
    )
    return outcome(
        [in_push for _, in_push in callers],
        total,
        queued,
        timeouts=sum(app.timeouts for app in apps),
        layers={
            POOL: Waits.of(app_waits, [app_waits[k] for k in served]),
            POOLER: Waits.of(bouncer.waits, [bouncer.waits[k] for k in served]),
        },
        served=[total[k] for k in served],
        late=sum(1 for k in served if total[k] > timeout),
    )


def predict_stack(
    push: Push,
    pooler: Pooler,
    *,
    pools: int,
    servers: int,
    pool_size: int,
    timeout: float,
    rate: float,
    runs: int = RUNS,
    seed: int = 1,
    wake: float = WAKE,
    wake_spread: float = WAKE_SPREAD,
    hold_factor: float = 1.0,
) -> Prediction:
    """`simulate_stack()` `runs` times, as `simulate.predict()` runs one pool: the same seeds
    for every size, each run its own wake-up window and its own mean database time. Counts
    are the fleet's."""

    def one(rng: random.Random, wake: float, hold_factor: float) -> Run:
        return simulate_stack(
            push,
            pooler,
            rng,
            pools=pools,
            servers=servers,
            pool_size=pool_size,
            timeout=timeout,
            rate=rate,
            wake=wake,
            hold_factor=hold_factor,
        )

    return repeat(
        one,
        pooler.service,
        servers=servers,
        timeout=timeout,
        runs=runs,
        seed=seed,
        wake=wake,
        wake_spread=wake_spread,
        hold_factor=hold_factor,
    )
