"""The three-layer model (issue 28) on written-down cases: the app pools, the pooler and the
database, simulated together (stacksim.py) and sized together (stacksizing.py).

The hand-worked cases use fixed holds and no lost wake-ups, so every figure follows from
the rules: one app pool of 40 connections (5 kept), 60 callers at once, each holding its
connection for 0.5 s of database time, a 2 s pool timeout.
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pool_exporter.incident import stacksizing
from pool_exporter.incident.holds import Holds
from pool_exporter.incident.measured import Measured, PoolerLimits
from pool_exporter.incident.pooler import SESSION, TRANSACTION, Pooler
from pool_exporter.incident.simulate import Run, Waits, simulate
from pool_exporter.incident.sizing import SAFE, TIMES_OUT, Goals, Preflight, Target, verdict
from pool_exporter.incident.stacksim import predict_stack, simulate_stack
from pool_exporter.incident.traffic import Push

HALF = Holds.fixed(0.5)
AT_ONCE = Push(60, 0.0)


def stack(servers: int, mode: str = TRANSACTION) -> Run:
    return simulate_stack(
        AT_ONCE, Pooler(servers, HALF, mode), random.Random(1),
        pools=1, servers=40, pool_size=5, timeout=2.0, rate=0.0, wake=0.0,
    )  # fmt: skip


def test_alone_the_app_pool_serves_the_push_in_time() -> None:
    # 40 connections, 60 callers: 20 wait one hold, 0.5 s.
    run = simulate(AT_ONCE, HALF, random.Random(1), servers=40, timeout=2.0, rate=0, wake=0)
    assert (run.timeouts, run.late, run.longest_wait) == (0, 0, 0.5)


def test_behind_a_smaller_transaction_pooler_the_queue_moves_there_and_past_the_timeout() -> None:
    # 40 app connections, 10 server connections: 10 transactions every 0.5 s. Callers 11-40
    # wait in the pooler up to 1.5 s; 41-50 get an app connection at 0.5 s and a server at
    # 2.0 s (2.0 s in all: not past the timeout), 51-60 at 1.0 s and 2.5 s: late, with no
    # pool timeout anywhere to say so.
    run = stack(10)
    assert run.timeouts == 0
    assert run.layers["pool"] == Waits(0.0, 1.0, 1.0)
    assert run.layers["pooler"] == Waits(1.0, 1.5, 1.5)
    assert (run.late, run.longest_wait) == (10, 2.5)


def test_behind_a_smaller_session_pooler_kept_connections_keep_their_servers() -> None:
    # Each app connection needs a server connection to open: 10 of the 40 open at once, 30
    # wait in the pooler. The app pool's own waiters reuse the 10 (41-60, by 1.5 s); then 5
    # stay kept in the pool, idle, each with its server, and 5 close, so the pooler's
    # waiters get servers 5 at a time every 0.5 s, from 1.5 s to 4.0 s: 20 of them late.
    run = stack(10, SESSION)
    assert run.timeouts == 0
    assert run.layers["pool"] == Waits(0.0, 1.0, 1.0)
    assert run.layers["pooler"].longest == 4.0
    assert (run.late, run.longest_wait) == (20, 4.0)


@pytest.mark.parametrize("mode", [TRANSACTION, SESSION])
def test_a_pooler_as_large_as_the_app_pool_adds_no_wait(mode: str) -> None:
    run = stack(40, mode)
    assert (run.timeouts, run.late, run.longest_wait) == (0, 0, 0.5)
    assert run.layers["pooler"] == Waits(0.0, 0.0, 0.0)


def test_the_verdict_counts_a_late_request_as_one_that_timed_out() -> None:
    # Waiting past the timeout in the pooler is a timeout the app does not see: unsafe.
    late = predict_stack(
        AT_ONCE, Pooler(10, HALF), pools=1, servers=40, pool_size=5, timeout=2.0, rate=0.0
    )
    assert late.timeouts_high == 0 and late.late > 0 and late.times_out
    assert verdict(late) == TIMES_OUT
    room = predict_stack(
        AT_ONCE, Pooler(40, HALF), pools=1, servers=40, pool_size=5, timeout=2.0, rate=0.0
    )
    assert verdict(room) == SAFE


# The incident's stack scaled as tests/support/stack.py scales it: 2 workers at SQLAlchemy's
# defaults (5 + 10, a 6 s timeout), PgBouncer's 40 server connections in transaction mode,
# max_connections 100 less 3 reserved; 0.86 s of database time per request (SHOW STATS).
SCALED = Measured(
    source="written down", pool="app", pools=2, rate=8.0, peak_rate=35.0, hold_mean=0.87,
    hold_p95=0.9, peak_in_use=15.0, timeouts=160.0, wait_p99=6.0, pool_size=5, max_overflow=10,
    pool_timeout=6.0, db_max_connections=100, db_reserved=3,
    pooler=PoolerLimits(max_client_conn=600, pool_size=40, mode=TRANSACTION),
    hold_median=0.86, hold_count=400.0, steady_rate=0.0, service_time=0.86, pooler_wait=0.0,
)  # fmt: skip
DEADLINE = Goals(request_timeout=6.0)


def test_a_pooler_raised_within_the_budget_serves_the_push_the_app_pools_could_only_move() -> None:
    # 400 users x 0.86 s on 40 server connections: at least 8.6 s, past the 6 s timeout. On
    # 80, five rounds: 4.3 s. The smallest pooler advise finds lies between, within 97.
    a = stacksizing.recommend(SCALED, Target(users=400), 2, DEADLINE)
    assert any("would only move the queue into the pooler" in line for line in a.working)
    assert a.pooler is not None and a.push is None
    assert 400 * 0.86 / 6.0 < a.pooler.default_pool_size <= 97
    # Each worker may use every server connection, however the push falls between them.
    assert a.pool_size + a.max_overflow == a.pooler.default_pool_size
    assert a.pool_timeout <= 6.0
    p = a.predicted
    assert p is not None and (p.timeouts_high, p.late_high) == (0, 0)
    assert p.longest_wait < 0.75 * 6.0
    assert set(a.waits) == {"pool", "pooler"}


def test_a_session_pooler_gives_each_worker_its_share_of_the_servers() -> None:
    session = replace(SCALED, pooler=replace(SCALED.pooler, mode=SESSION))
    a = stacksizing.recommend(session, Target(users=400), 2, DEADLINE)
    assert a.pooler is not None and a.pooler.default_pool_size <= 97
    assert 2 * (a.pool_size + a.max_overflow) <= a.pooler.default_pool_size


def test_a_database_budget_below_the_poolers_pool_bounds_it() -> None:
    # The pooler may open 150 server connections; the database has 97 less 7 that its other
    # clients hold, and the pooled database's own limit of 80.
    big = replace(SCALED, pooler=replace(SCALED.pooler, pool_size=150), db_others=7)
    a = stacksizing.recommend(big, Target(users=100), 2, DEADLINE)
    assert a.database_budget == 90
    assert any("more than the database's 90" in w for w in a.warnings)
    assert a.pooler is not None and a.pooler.default_pool_size <= 90
    limited = stacksizing.recommend(replace(big, db_limit=80), Target(users=100), 2, DEADLINE)
    assert limited.database_budget == 80
    assert limited.pooler is not None and limited.pooler.default_pool_size <= 80


def test_a_push_that_only_pacing_can_serve_is_paced_below_what_the_database_serves() -> None:
    # A database of 43 (40 after its reserved slots): 400 x 0.86 s on 40 take 8.6 s, past
    # the 6 s timeout however the pools are sized. 40 connections serve 46.5 requests/s.
    small = replace(SCALED, db_max_connections=43)
    a = stacksizing.recommend(small, Target(users=400), 2, DEADLINE)
    assert any("(the budget) do not serve" in line for line in a.working)
    assert a.pooler is not None and a.pooler.default_pool_size == 40
    assert a.push is not None and 20 < a.push.rate < 40 / 0.86
    p = a.predicted
    assert p is not None and (p.timeouts_high, p.late_high) == (0, 0)
    # Not needlessly slow: more than half what 40 connections serve with times 10% longer.
    assert a.push.rate > 0.5 * 40 / (0.86 * 1.1)
    assert a.push.batch == int(a.push.rate) and a.push.every == 1.0


def test_the_database_time_comes_from_the_pooler_not_the_apps_hold() -> None:
    # The app's hold includes the wait in the pooler; the sizing takes the database's time.
    waited = replace(SCALED, hold_mean=3.0, service_time=None, pooler_wait=2.1)
    work: list[str] = []
    assert stacksizing.stack_of(waited, None, work).service.mean == pytest.approx(0.9)
    assert "less the pooler's wait" in work[-1]
    assert stacksizing.stack_of(SCALED, None, []).service.mean == 0.86


def test_preflight_behind_the_pooler_calls_a_queue_moved_into_it_unsafe() -> None:
    # The stack test's third row: app pools for the whole push (5 + 395 per worker) behind
    # the pooler's 40. No pool timeout can fire, yet requests wait past the 6 s in PgBouncer.
    def gate(servers: int) -> Preflight:
        measured = replace(SCALED, pooler=replace(SCALED.pooler, pool_size=servers))
        return stacksizing.preflight(
            measured, 2, DEADLINE, users=400, ramp=0.0, requests_per_user=1.0,
            settings=(5, 395, 6.0),
        )  # fmt: skip

    moved = gate(40)
    # rounds of 40 every 0.86 s: the last two or three start past 6 s
    assert moved.prediction.timeouts_high == 0 and moved.prediction.late >= 80
    assert moved.verdict == TIMES_OUT and moved.predicted_timeouts == moved.prediction.late
    assert moved.prediction.layers["pooler"].longest > 6.0
    # Raised as advise raises it, the pooler serves the same pools in time.
    assert gate(88).verdict == SAFE


def test_a_steady_rate_behind_the_pooler_sizes_it_by_erlang_c_on_the_databases_time() -> None:
    # 60 requests/s more of 0.86 s: 51.6 connections busy on average, more than today's 40.
    a = stacksizing.recommend(SCALED, Target(rate=60.0), 2, DEADLINE)
    assert a.pooler is not None and a.push is None and a.predicted is None
    assert 60 * 0.86 < a.pooler.default_pool_size <= 97
    assert any("Erlang C needs" in line for line in a.working)
