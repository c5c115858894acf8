"""The queueing arithmetic against values known in closed form or from published tables."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest

from pool_exporter.incident import queueing


def erlang_c_exact(c: int, a: Fraction) -> Fraction:
    """Erlang C from its textbook definition, in exact rationals."""
    top = a**c / math.factorial(c) * Fraction(c) / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def wait_exceeds(servers: int, load: float, mean_hold: float, seconds: float) -> float:
    """P(wait > t) = C(c, A) · exp(-(c - A)·t / S): the share of requests that would still be
    waiting after `seconds` (with t = pool_timeout, the share that would time out)."""
    if load >= servers:
        return 1.0
    if mean_hold <= 0:
        return 0.0
    return queueing.erlang_c(servers, load) * math.exp(-(servers - load) * seconds / mean_hold)


@pytest.mark.parametrize(
    ("servers", "load", "expected"),
    [
        (1, 0.5, 0.5),  # M/M/1: the wait probability is the utilisation
        (2, 1.0, 1 / 3),
        (3, 2.0, 4 / 9),
        (11, 10.0, 0.6821),  # the call-centre table value for 10 erlangs on 11 agents
        (12, 10.0, 0.4494),
        (14, 10.0, 0.1741),
    ],
)
def test_erlang_c_matches_known_values(servers: int, load: float, expected: float) -> None:
    assert queueing.erlang_c(servers, load) == pytest.approx(expected, abs=5e-5)


@pytest.mark.parametrize(("servers", "load"), [(5, Fraction(3)), (15, Fraction(27, 2)), (40, 30)])
def test_erlang_c_recursion_agrees_with_the_factorial_formula(servers: int, load: Fraction) -> None:
    exact = erlang_c_exact(servers, Fraction(load))
    assert queueing.erlang_c(servers, float(load)) == pytest.approx(float(exact), rel=1e-9)


def test_erlang_b_matches_the_table_value_for_three_erlangs_on_five_lines() -> None:
    assert queueing.erlang_b(5, 3.0) == pytest.approx(0.1101, abs=5e-5)


def test_a_pool_that_cannot_keep_up_always_waits_and_forever() -> None:
    assert queueing.erlang_c(10, 10.0) == 1.0
    assert queueing.mean_wait(10, 12.0, 0.1) == math.inf
    assert wait_exceeds(10, 12.0, 0.1, 30.0) == 1.0


def test_littles_law_gives_busy_connections() -> None:
    assert queueing.offered_load(200.0, 0.05) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        queueing.offered_load(-1.0, 0.05)


def test_mean_wait_is_wait_probability_times_hold_over_spare_capacity() -> None:
    # M/M/1 at 50 %: W = rho / (1 - rho) * S = S
    assert queueing.mean_wait(1, 0.5, 0.2) == pytest.approx(0.2)


def test_wait_quantile_inverts_wait_exceeds() -> None:
    t = queueing.wait_quantile(12, 10.0, 0.1, 0.01)
    assert t > 0
    assert wait_exceeds(12, 10.0, 0.1, t) == pytest.approx(0.01)
    assert queueing.wait_quantile(30, 10.0, 0.1, 0.01) == 0.0  # under 1 % wait at all


def test_smallest_pool_is_the_first_size_meeting_both_targets() -> None:
    chosen = queueing.smallest_pool(10.0, 0.1, p_wait=0.2, max_mean_wait=1.0)
    assert chosen.servers == 14
    assert queueing.erlang_c(13, 10.0) > 0.2 >= chosen.p_wait
    tighter = queueing.smallest_pool(10.0, 0.1, p_wait=1.0, max_mean_wait=0.001)
    assert queueing.mean_wait(tighter.servers - 1, 10.0, 0.1) > 0.001 >= tighter.mean_wait


def test_smallest_pool_rejects_impossible_targets() -> None:
    with pytest.raises(ValueError, match="wait probability"):
        queueing.smallest_pool(10.0, 0.1, p_wait=0.0, max_mean_wait=1.0)


def test_max_rate_is_the_rate_at_which_the_wait_target_is_just_met() -> None:
    rate = queueing.max_rate(15, 0.1, p_wait=0.01, base_rate=20.0)
    assert queueing.erlang_c(15, (20.0 + rate) * 0.1) <= 0.01
    assert queueing.erlang_c(15, (20.0 + rate * 1.01) * 0.1) > 0.01
    assert queueing.max_rate(15, 0.1, p_wait=0.01, base_rate=140.0) == 0.0  # already waiting


def test_a_burst_slower_than_the_pool_never_queues() -> None:
    b = queueing.burst(100, 10.0, 15, 0.1)  # 10/s against 150/s
    assert not b.queues
    assert b.longest_wait == 0.0


def test_a_burst_faster_than_the_pool_queues_its_excess() -> None:
    # 2,000 users in 2 s against 15 connections of 0.5 s: 30/s served, 15 start at once
    b = queueing.burst(2000, 2.0, 15, 0.5)
    assert b.capacity == pytest.approx(30.0)
    assert b.backlog == pytest.approx(2000 - 15 - 60)
    assert b.longest_wait == pytest.approx(1925 / 30)


def test_steady_traffic_takes_its_share_of_the_pool_before_the_burst() -> None:
    alone = queueing.burst(600, 2.0, 15, 0.1)
    shared = queueing.burst(600, 2.0, 15, 0.1, base_rate=100.0)
    assert shared.capacity == pytest.approx(50.0)
    assert shared.longest_wait > alone.longest_wait
