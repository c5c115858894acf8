"""`pool-exporter replay`: bursts against real pools, its JSON results and its errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pool_exporter.cli import main
from pool_exporter.incident import replay as rp
from pool_exporter.incident.percentiles import nearest_rank, percentiles
from pool_exporter.incident.results import SCHEMA, Result, Sample
from pool_exporter.incident.traffic import POISSON, UNIFORM, Push
from pool_exporter.metrics import HOLD_BUCKETS

from .support.exposition import value

# Fast enough for a test, slow enough that 15 connections cannot keep up with 300 users in
# 0.5 s: about 100 requests per second served against 600 arriving.
OVERLOAD = rp.Scenario(users=300, ramp=0.5, hold=rp.HoldTime(0.1, 0.2), seed=7)
SHORT_TIMEOUT = rp.PoolSettings(5, 10, 1.0)

TOP_LEVEL_KEYS = {
    "schema": str,
    "database": str,
    "pool": str,
    "settings": dict,
    "scenario": dict,
    "started_at": float,
    "push_at": float,
    "elapsed": float,
    "requests": int,
    "ok": int,
    "timeouts": int,
    "errors": int,
    "cancelled": int,
    "not_started": int,
    "interrupted": bool,
    "longest_wait": float,
    "wait": dict,
    "hold": dict,
    "peak_in_use": int,
    "peak_waiting": int,
    "arrival_rate": float,
    "max_start_lag": float,
    "hold_overhead": float,
    "hold_buckets": list,
    "layers": dict,
    "error_types": dict,
    "timeline": list,
}


@pytest.fixture(scope="module")
def overload() -> Result:
    registry = CollectorRegistry()
    return rp.replay(OVERLOAD, SHORT_TIMEOUT, registry=registry, sample_interval=0.25)


def test_a_burst_beyond_the_pool_saturates_it_and_times_out(overload: Result) -> None:
    r = overload
    assert r.requests == 300
    assert r.ok + r.timeouts == 300
    assert r.timeouts > 0
    assert r.peak_in_use == 15
    assert r.peak_waiting > 100
    assert r.time_to_saturation is not None and r.time_to_saturation < 0.5
    # nobody times out before having waited the pool timeout
    assert r.first_timeout is not None and r.first_timeout >= 1.0
    assert r.longest_wait <= 1.0 + 0.05
    assert r.wait["max"] >= 1.0


def test_the_timeline_follows_the_pool_through_the_burst(overload: Result) -> None:
    timeline = overload.timeline
    # one sample on each 0.25 s tick: a sampler that drifted, skipped or doubled a tick shows
    assert all(abs(s.t - k * 0.25) < 0.2 for k, s in enumerate(timeline[:-1]))
    # a sample's waits are of checkouts that ended in it: none past the pool timeout
    assert all(s.wait_max <= SHORT_TIMEOUT.pool_timeout + 0.1 for s in timeline)
    assert max(s.waiting for s in timeline) > 0
    assert timeline[-1].waiting == 0 and timeline[-1].in_use == 0
    assert timeline[-1].timeouts == overload.timeouts
    assert timeline[-1].checkouts == overload.ok
    assert all(s.in_use <= s.capacity for s in timeline)


def test_a_burst_the_pool_can_absorb_has_no_timeouts() -> None:
    gentle = rp.Scenario(users=60, ramp=1.0, hold=rp.HoldTime(0.02, 0.02))
    r = rp.replay(gentle, rp.PoolSettings(5, 10, 1.0), registry=CollectorRegistry())
    assert (r.ok, r.timeouts, r.errors) == (60, 0, 0)
    assert r.time_to_saturation is None
    assert r.first_timeout is None
    assert r.hold["p50"] == pytest.approx(0.02, abs=0.01)
    # every hold planned 0.02 s: what the replay measured beyond that is its own overhead
    assert r.hold_overhead == pytest.approx(r.hold["mean"] - 0.02, abs=1e-4)
    assert r.hold_overhead > 0


def test_background_traffic_runs_for_the_duration_besides_the_push() -> None:
    scenario = rp.Scenario(
        users=20,
        ramp=0.2,
        push_at=1.0,
        background_rate=40.0,
        duration=2.0,
        hold=rp.HoldTime(0.01, 0.01),
    )
    planned = scenario.arrivals()
    background = [p for p in planned if not p[2]]
    assert 40 <= len(background) <= 130  # Poisson with a mean of 80
    assert all(0 <= p[0] < 2.0 for p in background)
    assert all(1.0 <= p[0] <= 1.2 for p in planned if p[2])
    r = rp.replay(scenario, rp.PoolSettings(5, 10, 1.0), registry=CollectorRegistry())
    assert r.requests == len(planned)
    assert r.timeouts == 0


def test_the_replay_draws_its_arrivals_from_the_simulations_model() -> None:
    # one arrival model for both: evenly spaced, the same times; at random, within the ramp
    uniform = rp.Scenario(users=50, ramp=2.0, push_at=1.0, seed=9)
    pushed = [at - 1.0 for at, _, push in uniform.arrivals() if push]
    assert pushed == pytest.approx(Push(50, 2.0, UNIFORM).arrivals(random.Random(9)))
    poisson = rp.Scenario(users=50, ramp=2.0, ramp_shape=POISSON, push_at=1.0, seed=9)
    drawn = [at - 1.0 for at, _, push in poisson.arrivals() if push]
    assert all(0 <= at <= 2.0 for at in drawn) and drawn != pytest.approx(pushed)
    with pytest.raises(ValueError, match="uniform or poisson"):
        rp.Scenario(users=5, ramp_shape="random")


def test_a_seed_replays_the_requests_it_always_did() -> None:
    # each request's hold drawn right after its time: the draws of every earlier version, so
    # that a seed's results stay comparable with those written down before
    scenario = rp.Scenario(
        users=3, ramp=1.0, ramp_shape=POISSON, hold=rp.HoldTime(0.05, 0.2), background_rate=2.0,
        duration=1.0, seed=1,
    )  # fmt: skip
    planned = [(round(at, 4), round(hold, 4), push) for at, hold, push in scenario.arrivals()]
    assert planned == [
        (0.1344, 0.1138, True), (0.2551, 0.0155, True), (0.4954, 0.0156, True),
        (0.7773, 0.0733, False), (0.8266, 0.2419, False),
    ]  # fmt: skip


def test_the_replayed_pool_is_exported_while_it_runs() -> None:
    registry = CollectorRegistry()
    seen: list[float] = []

    def on_sample(sample: Sample, result: Result) -> None:
        seen.append(value(registry, "sqlalchemy_pool_max_connections", pool="burst"))

    r = rp.replay(
        rp.Scenario(users=30, ramp=0.5, hold=rp.HoldTime(0.05, 0.05)),
        SHORT_TIMEOUT,
        registry=registry,
        pool_name="burst",
        sample_interval=0.2,
        on_sample=on_sample,
    )
    assert seen and set(seen) == {15.0}
    assert r.pool == "burst"


def test_hold_times_follow_the_median_and_p95_asked_for() -> None:
    hold = rp.HoldTime(0.2, 0.8)
    rng = random.Random(3)
    draws = sorted(hold.sample(rng) for _ in range(20000))
    assert draws[10000] == pytest.approx(0.2, rel=0.05)
    assert draws[19000] == pytest.approx(0.8, rel=0.08)
    assert hold.mean == pytest.approx(sum(draws) / len(draws), rel=0.05)
    assert rp.HoldTime(0.3, 0.3).sample(rng) == 0.3


def test_percentiles_are_by_nearest_rank_for_replay_and_simulation_alike() -> None:
    # one function for both: each percentile a value that was measured
    values = [float(k) for k in range(100, 0, -1)]
    p = percentiles(values)
    assert (p["p50"], p["p90"], p["p99"], p["max"], p["mean"]) == (50, 90, 99, 100, 50.5)
    assert nearest_rank([0.1, 0.2, 0.4], 0.5) == 0.2 and nearest_rank([], 0.5) == 0.0
    assert percentiles([]) == {}


def test_replay_writes_json_results_that_read_back(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    code = main(
        ["replay", "--users", "40", "--ramp", "0.2", "--hold-median", "0.05", "--hold-p95", "0.05",
         "--pool-size", "2", "--max-overflow", "0", "--pool-timeout", "0.3", "--json", str(out)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "timed out" in printed and "saturated" in printed
    data = json.loads(out.read_text())
    for key, kind in TOP_LEVEL_KEYS.items():
        assert isinstance(data[key], kind), key
    assert data["schema"] == SCHEMA
    assert data["settings"] == {"pool_size": 2, "max_overflow": 0, "pool_timeout": 0.3}
    assert data["scenario"]["users"] == 40
    assert set(data["scenario"]["hold"]) == {"median", "p95", "mean"}
    assert set(data["wait"]) == {"p50", "p90", "p95", "p99", "max", "mean"}
    assert data["timeouts"] > 0 and data["ok"] + data["timeouts"] == 40
    assert set(data["timeline"][0]) == set(Sample.__dataclass_fields__)
    assert [le for le, _ in data["hold_buckets"]] == list(HOLD_BUCKETS)
    assert data["hold_buckets"][-1][1] == data["ok"]  # every hold is under the last bucket
    # where the time went: no pooler layer without --through-pooler
    assert list(data["layers"]) == ["pool", "database"]
    assert all(set(v) == {"p50", "p99", "max", "total"} for v in data["layers"].values())
    assert data["layers"]["pool"]["max"] <= data["longest_wait"]
    assert "where the time went in the " in printed and "pooler" not in printed
    back = Result.from_json(data)
    assert back.timeouts == data["timeouts"]
    assert back.timeline[-1].timeouts == data["timeouts"]
    # written by a later version (a field more) or an earlier one (no hold histogram)
    data["added_later"] = 1
    data["timeline"][0]["added_later"] = 2
    del data["hold_buckets"], data["layers"]
    back = Result.from_json(data)
    assert back.timeouts == data["timeouts"] and back.hold_buckets == [] and back.layers == {}
    assert not any(line.startswith("where the time went") for line in rp.summary(back))


def test_replay_against_postgresql_prints_the_url_without_its_password(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    import sqlalchemy as sa

    url = sa.make_url(pg_url).set(password="s3cret-pw")  # trust auth ignores it
    code = main(
        ["replay", "--database-url", url.render_as_string(hide_password=False), "--users", "30",
         "--ramp", "0.2", "--hold-median", "0.02", "--hold-p95", "0.05", "--json", "-"]
    )  # fmt: skip
    assert code == 0
    captured = capsys.readouterr()
    assert "s3cret-pw" not in captured.out + captured.err
    assert "***" in captured.err
    data = json.loads(captured.out)
    assert data["ok"] == 30 and data["errors"] == 0
    # No part of the userinfo, the user name included.
    assert data["database"].startswith("postgresql+psycopg://***@127.0.0.1:")


def test_a_replay_through_a_pooler_holds_a_transaction() -> None:
    # the pooler's wait is the transaction's first statement: there must be a transaction
    with pytest.raises(ValueError, match="transaction"):
        rp.Scenario(users=1, through_pooler=True)
    r = rp.replay(
        rp.Scenario(users=3, ramp=0, hold=rp.HoldTime(0.01, 0.01), hold_in_transaction=True,
                    through_pooler=True),
        rp.PoolSettings(1, 0, 5.0),
        registry=CollectorRegistry(),
    )  # fmt: skip
    assert r.ok == 3 and list(r.layers) == ["pool", "pooler", "database"]
    # one pool connection for three users: they queue in the app pool, each for a hold
    assert r.layers["pool"]["max"] >= 0.01 and r.layers["database"]["p50"] >= 0.01
    lines = rp.summary(r)
    assert [line.split()[0] for line in lines[-3:]] == ["pool", "pooler", "database"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--database-url", "not a url"], "not a database URL"),
        (["--database-url", "nosuchdb://x/y"], "no driver"),
        (["--database-url", "postgresql+psycopg://u:pw@127.0.0.1:1/x"], "cannot use"),
        (["--hold-median", "0"], "hold time"),
        (["--users", "-1"], "must not be negative"),
        (["--pool-timeout", "0"], "timeout"),
    ],
)
def test_bad_replay_input_is_one_error_line_and_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", "--users", "5", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]
    assert "pw@" not in err[0]
