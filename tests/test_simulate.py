"""The sizing model tested directly: the QueuePool simulation on inputs worked out by hand and
with fixed seeds, the gate's verdicts and the recommended sizes written down."""

from __future__ import annotations

import dataclasses
import math
import random

import pytest

from pool_exporter.incident import queueing
from pool_exporter.incident.clock import Clock
from pool_exporter.incident.holds import Holds, HoldTime
from pool_exporter.incident.measured import Measured
from pool_exporter.incident.queueing import erlang_c
from pool_exporter.incident.queuepool import GAVE_UP, SERVED, QueuePoolModel
from pool_exporter.incident.simulate import WAKE, Prediction, predict, simulate
from pool_exporter.incident.sizing import (
    AT_RISK,
    SAFE,
    TIMES_OUT,
    BadGoal,
    Goals,
    Target,
    per_pool_push,
    preflight,
    recommend,
    verdict,
)
from pool_exporter.incident.traffic import POISSON, Push
from pool_exporter.metrics import HOLD_BUCKETS

# The hold histogram of a replay of 600 users over 1 s (lognormal holds, median 0.05 s,
# p95 0.2 s, measured mean 0.075 s with the query and the thread's overhead)
BUCKETS = ((0.005, 1), (0.01, 12), (0.025, 104), (0.05, 278), (0.1, 448), (0.25, 547),
           (0.5, 568), (1.0, 570), (float("inf"), 570))  # fmt: skip
HOLDS = Holds.from_buckets(BUCKETS, 0.075)
MEASURED = Measured(
    source="written down", pool="api", pools=1, rate=20.0, peak_rate=20.0, hold_mean=0.075,
    hold_p95=0.22, peak_in_use=15, timeouts=0, wait_p99=None, pool_size=5, max_overflow=10,
    pool_timeout=1.5, hold_buckets=BUCKETS, hold_median=0.05,
)  # fmt: skip


def test_waves_of_fixed_holds_first_come_first_served_are_counted_exactly() -> None:
    # 100 callers at once on 10 connections held 0.1 s each: waves start at 0, 0.1, ... 0.4 s;
    # the sixth would start at 0.5 s, past the 0.45 s timeout, so 50 time out
    run = simulate(
        Push(100, 0.0), Holds.fixed(0.1), random.Random(1),
        servers=10, timeout=0.45, rate=0.0, wake=0.0,
    )  # fmt: skip
    assert (run.requests, run.timeouts) == (100, 50)
    assert run.longest_wait == pytest.approx(0.4)
    assert run.wait_p50 == pytest.approx(0.4) and run.wait_p99 == 0.45


def test_a_woken_caller_beaten_by_a_newcomer_waits_again_at_the_back() -> None:
    # three connections held 0.1 s, a caller every 1/30 s: first come, first served nobody
    # waits; when a woken caller needs a while to run again, newcomers take the connection
    # and some callers wait several holds
    push, holds = Push(60, 2.0), Holds.fixed(0.1)
    fifo = simulate(push, holds, random.Random(3), servers=3, timeout=5, rate=0, wake=0)
    slow_wake = simulate(push, holds, random.Random(3), servers=3, timeout=5, rate=0, wake=0.02)
    assert fifo.longest_wait < 1e-9
    assert slow_wake.longest_wait > 0.3


class _Delays(random.Random):
    """Every wake-up takes `delay` seconds."""

    def __init__(self, delay: float) -> None:
        super().__init__(1)
        self.delay = delay

    def expovariate(self, lambd: float = 1.0) -> float:
        return self.delay


def test_a_caller_at_its_deadline_takes_a_connection_its_woken_caller_has_not_reached() -> None:
    # One connection held 0.9 s; callers 1 and 2 wait from 0.1 s and 0.2 s with a 1 s
    # timeout. The return at 0.9 s wakes caller 1, who needs 0.5 s to run again: at its 1.2 s
    # deadline caller 2 looks at the queue once more and takes the connection; caller 1 runs
    # at 1.4 s, past its own deadline, finds none and gives up.
    clock, holds = Clock(), {0: 0.9, 2: 10.0}

    def granted(now: float, caller: int) -> None:
        clock.at(now + holds[caller], pool.release, caller)

    pool = QueuePoolModel(
        clock, _Delays(0.5), [0.0, 0.1, 0.2], granted, servers=1, timeout=1.0, wake=0.5
    )
    for caller, at in enumerate(pool.arrivals):
        clock.at(at, pool.arrive, caller)
    clock.run()
    assert list(pool.state) == [SERVED, GAVE_UP, SERVED] and pool.timeouts == 1
    assert pool.waits == pytest.approx([0.0, 1.0, 1.0])


def test_each_run_takes_its_own_wake_up_window_and_the_edge_shows_it() -> None:
    # At the edge the count is the lost wake-ups': runs that each take their own window,
    # lognormal around the measured median, spread wider than runs that all take the median,
    # and more wake-ups lost mean more timeouts.
    push = Push(1500, 3.0)
    spread = predict(push, HOLDS, servers=25, timeout=2.0, rate=20.0)
    fixed = predict(push, HOLDS, servers=25, timeout=2.0, rate=20.0, wake_spread=0.0)
    slower = predict(push, HOLDS, servers=25, timeout=2.0, rate=20.0, wake=2 * WAKE)
    assert spread.timeouts_high - spread.timeouts_low > fixed.timeouts_high - fixed.timeouts_low
    assert slower.timeouts > spread.timeouts > 0


def test_the_runs_draw_the_mean_hold_within_its_measured_standard_error() -> None:
    # 570 holds measured: their mean is known to about 4.6 %, and the runs' range says so
    counted = Holds.from_buckets(BUCKETS, 0.075, count=570)
    assert counted.mean_error == pytest.approx(0.0457, abs=0.001)
    assert HOLDS.mean_error == 0  # no count: taken as exact
    exact = predict(Push(600, 1.0), HOLDS, servers=15, timeout=1.5, rate=20.0)
    measured = predict(Push(600, 1.0), counted, servers=15, timeout=1.5, rate=20.0)
    spread = measured.timeouts_high - measured.timeouts_low
    assert spread > exact.timeouts_high - exact.timeouts_low
    assert measured.timeouts_low < exact.timeouts < measured.timeouts_high


def test_a_push_needs_fewer_connections_to_pass_unqueued_than_erlang_c_says() -> None:
    # Erlang C takes the push's 520 requests/s as a Poisson stream held up forever; 1,000
    # users evenly spaced over 2 s pass with at most 5 % of them waiting on fewer
    a = recommend(MEASURED, Target(users=1000, ramp=2.0), 1, Goals(), db_max=100)
    erlang = queueing.smallest_pool(520 * 0.075, 0.075, p_wait=0.05, max_mean_wait=0.1)
    assert a.no_wait_servers is not None and a.no_wait_servers < erlang.servers
    p = predict(Push(1000, 2.0), HOLDS, servers=a.no_wait_servers, timeout=2.0, rate=20.0)
    fewer = predict(Push(1000, 2.0), HOLDS, servers=a.no_wait_servers - 1, timeout=2.0, rate=20.0)
    assert p.push_waited <= 0.05 < fewer.push_waited


def test_holds_drawn_from_the_histogram_have_its_mean_and_its_shape() -> None:
    draw = HOLDS.sampler(random.Random(2))
    xs = sorted(draw() for _ in range(40000))
    assert sum(xs) / len(xs) == pytest.approx(0.075, rel=0.02)
    # the share under each bucket's bound stays near the histogram's (the mean is scaled)
    assert sum(1 for x in xs if x <= 0.1) / len(xs) == pytest.approx(448 / 570, abs=0.06)
    assert Holds.fixed(0.3).sampler(random.Random(1))() == pytest.approx(0.3)


def test_holds_from_a_histogram_reject_an_empty_one() -> None:
    with pytest.raises(ValueError, match="empty"):
        Holds.from_buckets(((0.1, 0), (float("inf"), 0)), 0.1)


def test_a_fixed_seed_gives_written_down_predictions() -> None:
    p = predict(Push(600, 1.0), HOLDS, servers=15, timeout=1.5, rate=20.0)
    assert (p.runs, p.timeouts, p.timeouts_low, p.timeouts_high) == (31, 111, 80, 157)
    assert p.wait_p50 == pytest.approx(0.948, abs=0.001)
    first_come = predict(Push(600, 1.0), HOLDS, servers=15, timeout=1.5, rate=20.0, wake=0.0)
    assert first_come.timeouts == 108


@pytest.mark.parametrize(
    ("users", "ramp", "servers", "timeout", "expected"),
    [
        (300, 3.0, 8, 3.0, SAFE),  # longest wait about 0.9 s of 3 s
        (300, 3.0, 8, 1.0, AT_RISK),  # median run without timeouts, some runs with
        (1500, 3.0, 25, 2.0, TIMES_OUT),
    ],
)
def test_the_gate_has_three_verdicts(
    users: int, ramp: float, servers: int, timeout: float, expected: str
) -> None:
    p = predict(Push(users, ramp), HOLDS, servers=servers, timeout=timeout, rate=20.0)
    assert verdict(p) == expected, p


def test_a_wait_within_the_margin_of_the_timeout_is_at_risk() -> None:
    def waited(longest: float) -> Prediction:
        return Prediction(
            servers=8, timeout=2.0, runs=31, timeouts=0, timeouts_low=0, timeouts_high=0,
            wait_p50=0.1, wait_p99=0.5, longest_wait=longest, longest_wait_high=longest,
        )  # fmt: skip

    assert verdict(waited(1.49)) == SAFE
    assert verdict(waited(1.5)) == AT_RISK  # within 25 % of the 2 s timeout


def test_preflight_shows_the_prediction_either_side_of_the_mean_hold() -> None:
    p = preflight(
        MEASURED, 1, Goals(), users=1500, ramp=3.0, requests_per_user=1.0,
        settings=(10, 15, 2.0),
    )  # fmt: skip
    assert p.verdict == TIMES_OUT and p.predicted_timeouts == p.prediction.timeouts
    assert p.shorter.timeouts < p.prediction.timeouts < p.longer.timeouts
    assert any(line.startswith("hold ±10%") for line in p.working)
    assert p.fluid_longest_wait < 2.0  # first come, first served would have called it safe


@pytest.mark.parametrize(
    ("goals", "goal"),
    [(Goals(p_wait=1.0), "p_wait"), (Goals(request_timeout=0), "request_timeout")],
)
def test_a_goal_out_of_range_is_named_in_the_models_words(goals: Goals, goal: str) -> None:
    # the model has no flags: the command translates the goal's name into its own
    with pytest.raises(BadGoal) as raised:
        recommend(MEASURED, Target(users=10), 1, goals)
    assert raised.value.goal == goal and str(raised.value).startswith(f"{goal} must be")
    assert "--" not in str(raised.value)


@pytest.mark.parametrize(
    ("database", "size", "overflow", "timeout", "chosen"),
    [(100, 5, 41, 2.0, 46), (40, 5, 30, 2.0, 35)],
)
def test_recommended_sizes_are_written_down(
    database: int, size: int, overflow: int, timeout: float, chosen: int
) -> None:
    a = recommend(MEASURED, Target(users=1000, ramp=2.0), 1, Goals(), db_max=database)
    assert (a.pool_size, a.max_overflow, a.pool_timeout) == (size, overflow, timeout)
    assert (a.no_wait_servers, a.ride_out_servers) == (46, 35)
    assert a.pool_size + a.max_overflow == chosen <= database
    assert a.predicted is not None and a.predicted.timeouts_high == 0
    assert a.alternative is not None  # the other size, with its own cost


def test_in_steady_state_the_simulation_agrees_with_erlang_c() -> None:
    # Poisson arrivals, exponential holds, first come first served (no wake-up delay): the
    # case Erlang C is exact for. 10 connections at 8 erlangs wait with probability 0.409
    # (a table value).
    mean = 0.1
    bounds = [mean * k / 20 for k in range(1, 200)]
    exponential = Holds.from_buckets(
        [(b, 1 - math.exp(-b / mean)) for b in bounds] + [(math.inf, 1.0)], mean
    )
    steady = Push(0, 0.0)  # no push: steady traffic only
    runs = [
        simulate(steady, exponential, random.Random(s), servers=10, timeout=100, rate=80, wake=0)
        for s in range(3)
    ]
    waited = sum(r.waited * r.requests for r in runs) / sum(r.requests for r in runs)
    assert erlang_c(10, 8.0) == pytest.approx(0.409, abs=0.001)
    assert waited == pytest.approx(erlang_c(10, 8.0), abs=0.03)


def test_results_without_a_hold_histogram_simulate_from_the_median_and_p95() -> None:
    # a replay written before results carried the histogram: a lognormal through its figures
    older = dataclasses.replace(MEASURED, hold_buckets=())
    holds = older.holds()
    draw = holds.sampler(random.Random(4))
    xs = sorted(draw() for _ in range(20000))
    assert sum(xs) / len(xs) == pytest.approx(0.075, rel=0.03)
    assert xs[10000] == pytest.approx(0.05, rel=0.25)
    assert xs[19000] == pytest.approx(0.22, rel=0.25)


def test_the_replay_and_the_simulation_draw_holds_from_one_lognormal() -> None:
    # what a replay's requests hold, and what the simulation draws when it has only the
    # median and p95: the same distribution, the second through the exporter's buckets
    hold = HoldTime(0.05, 0.2)
    rng = random.Random(6)
    replayed = sorted(hold.sample(rng) for _ in range(20000))
    draw = Holds.from_lognormal(hold, hold.mean, HOLD_BUCKETS).sampler(random.Random(6))
    simulated = sorted(draw() for _ in range(20000))
    assert sum(simulated) / 20000 == pytest.approx(sum(replayed) / 20000, rel=0.03)
    assert simulated[10000] == pytest.approx(replayed[10000], rel=0.15)
    assert simulated[19000] == pytest.approx(replayed[19000], rel=0.1)
    assert hold.cdf(0.05) == pytest.approx(0.5) and hold.cdf(0.2) == pytest.approx(0.95)


def test_one_pool_of_several_gets_its_share_of_a_push_at_random_times() -> None:
    # one caller every 0.07 s, each holding 0.1 s: evenly spaced, two connections serve them
    # all at once; the same share at random times queues
    holds = Holds.fixed(0.1)
    assert per_pool_push(40, 2.8, 1).shape == "uniform"
    shared = per_pool_push(40, 2.8, 4)
    assert (shared.users, shared.shape) == (40, POISSON)
    alone = simulate(Push(40, 2.8), holds, random.Random(5), servers=2, timeout=5, rate=0, wake=0)
    split = simulate(shared, holds, random.Random(5), servers=2, timeout=5, rate=0, wake=0)
    assert alone.waited == 0 and split.waited > 0.05
    with pytest.raises(ValueError, match="uniform or poisson"):
        Push(10, 1.0, "bursty")
