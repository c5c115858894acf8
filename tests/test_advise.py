"""`pool-exporter advise`: sizing from a replay's results and from a real Prometheus, the
pre-flight gate's exit codes, and one clear error line for bad input."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer

import pytest
from prometheus_client import CollectorRegistry, Gauge

from pool_exporter import metrics as m
from pool_exporter.cli import main
from pool_exporter.exposition import start_http_server
from pool_exporter.incident import replay as rp
from pool_exporter.incident.measured import from_prometheus, from_replay
from pool_exporter.incident.promapi import PrometheusAPI
from pool_exporter.incident.promserver import PrometheusServer
from pool_exporter.incident.results import Result

from .support.binaries import require_binary
from .support.procs import wait_until

# 600 users in 1 s against 15 connections of 0.1 s (about 130 served per second): timeouts.
BURST = rp.Scenario(
    users=600, ramp=1.0, hold=rp.HoldTime(0.05, 0.2), background_rate=20.0, duration=2.5,
    push_at=1.0, seed=5,
)  # fmt: skip
INCIDENT = rp.PoolSettings(5, 10, 1.5)
# The advice comes from a replay measured on this machine: tests beside it would change it
# (the other lane's serial tests leave the machine mostly idle).
pytestmark = [pytest.mark.serial, pytest.mark.replays]
DB_MAX = m.DATABASE_MAX_CONNECTIONS.name


@pytest.fixture(scope="module")
def burst_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = rp.replay(BURST, INCIDENT, registry=CollectorRegistry())
    assert result.timeouts > 0, "the burst must overwhelm the incident's pool"
    path = tmp_path_factory.mktemp("advise") / "burst.json"
    rp.write_json(result, str(path))
    return path


def advise(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, list[dict]]:
    code = main(["advise", *args, "--json", "-"])
    out = capsys.readouterr().out
    text, _, data = out.partition("\n[")
    return code, text, json.loads("[" + data) if data else []


def advise_fleet(
    capsys: pytest.CaptureFixture[str], burst_json: Path, *args: str
) -> tuple[int, str, list[dict]]:
    """`advise` from the burst's replay for 4 workers on each of 3 instances, 20000 users in
    5 s, against a database of 100 connections."""
    return advise(
        capsys, "--from-replay", str(burst_json), "--database-max-connections", "100",
        "--workers", "4", "--instances", "3", "--users", "20000", "--ramp", "5", *args,
    )  # fmt: skip


def test_advice_from_a_replay_shows_its_working_and_fits_the_database(
    burst_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, report = advise(
        capsys, "--from-replay", str(burst_json), "--database-max-connections", "100"
    )
    assert code == 0, text
    a = report[0]["advice"]
    assert a["pool"] == "replay" and a["pools"] == 1
    assert "Little's law A = λ·S" in text and "Erlang C: c = " in text
    assert "a push of 600 users over 1 s" in text  # the replay's own push is the target
    c = a["pool_size"] + a["max_overflow"]
    assert c > 15  # the incident's pool was too small for this push
    assert f"recommend pool_size={a['pool_size']} max_overflow={a['max_overflow']}" in text
    assert a["fleet_connections"] == c and a["database_budget"] == 100
    assert not a["exhausts_database"] and "WARNING" not in text


def test_replaying_the_burst_with_the_advised_settings_has_no_timeouts(
    burst_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, report = advise(capsys, "--from-replay", str(burst_json))
    a = report[0]["advice"]
    advised = rp.PoolSettings(a["pool_size"], a["max_overflow"], a["pool_timeout"])
    result = rp.replay(BURST, advised, registry=CollectorRegistry())
    assert result.requests == len(BURST.arrivals())
    assert (result.timeouts, result.errors) == (0, 0)


def test_advice_warns_when_the_fleet_would_exhaust_the_database(
    burst_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, report = advise_fleet(capsys, burst_json)
    assert code == 0
    a = report[0]["advice"]
    assert a["pools"] == 12 and a["exhausts_database"]
    assert "WARNING" in text and "exhaust the database (100 available)" in text
    assert "at most 8 per pool fit" in text


def test_preflight_passes_a_push_the_pools_absorb(
    burst_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, report = advise(
        capsys, "--from-replay", str(burst_json), "--preflight", "--push-users", "50",
        "--push-ramp", "5",
    )  # fmt: skip
    assert code == 0, text
    p = report[0]["preflight"]
    assert p["safe"] and p["predicted_timeouts"] == 0
    assert p["verdict"] == "safe"
    assert "safe sending rate" in text and "push of 50 users: SAFE" in text


def test_preflight_fails_a_push_that_would_time_out_and_says_how_to_split_it(
    burst_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, report = advise(
        capsys, "--from-replay", str(burst_json), "--preflight", "--push-users", "2000"
    )
    assert code == 1
    p = report[0]["preflight"]
    assert not p["safe"] and p["predicted_timeouts"] > 0
    assert p["batches"] > 1 and p["batch_users"] * p["batches"] >= 2000
    assert "WOULD TIME OUT" in text
    # the settings in force can be overridden: a far larger pool takes the same push
    code, text, _ = advise(
        capsys, "--from-replay", str(burst_json), "--preflight", "--push-users", "2000",
        "--push-ramp", "10", "--pool-size", "50", "--max-overflow", "50", "--pool-timeout", "5",
    )  # fmt: skip
    assert code == 0, text


def test_preflight_of_the_replayed_push_predicts_a_range_that_holds_what_happened(
    burst_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    observed = json.loads(burst_json.read_text())["timeouts"]
    code, text, report = advise(
        capsys, "--from-replay", str(burst_json), "--preflight", "--push-users",
        str(BURST.users), "--push-ramp", str(BURST.ramp),
    )  # fmt: skip
    assert code == 1, text
    p = report[0]["preflight"]
    assert p["verdict"] == "would time out"
    # the runs' range at the measured hold, widened by the hold ±10 % the output shows
    assert p["shorter"]["timeouts_low"] <= observed <= p["longer"]["timeouts_high"], text
    assert "hold ±10%" in text and "fluid" in text


def test_a_push_at_risk_fails_the_gate_unless_the_risk_is_accepted(
    burst_json: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 300 users over 3 s on 8 connections with a 1 s timeout: most runs without a timeout,
    # some with a few
    args = [
        "--from-replay", str(burst_json), "--preflight", "--push-users", "300", "--push-ramp",
        "3", "--pool-size", "3", "--max-overflow", "5", "--pool-timeout", "1",
    ]  # fmt: skip
    code, text, report = advise(capsys, *args)
    assert report[0]["preflight"]["verdict"] == "at risk", text
    assert code == 1 and "AT RISK" in text
    code, _, _ = advise(capsys, *args, "--accept-risk")
    assert code == 0


def test_a_replay_counts_its_holds_so_the_simulation_knows_how_well_their_mean_is_known(
    burst_json: Path,
) -> None:
    data = json.loads(burst_json.read_text())
    measured = from_replay(Result.from_json(data), "burst")
    assert measured.hold_count == data["ok"] > 500
    # about 600 lognormal holds (CV about 1): their mean within about 4 %
    assert measured.holds().mean_error == pytest.approx(1 / data["ok"] ** 0.5, rel=0.3)


@pytest.mark.parametrize(
    ("buckets", "message"),
    [([[0.1, 5], [0.25, 3]], "hold buckets must grow"), ([[0.1, "many"]], "could not convert")],
)
def test_a_replay_result_with_a_broken_hold_histogram_is_one_error_line(
    buckets: list[list[object]],
    message: str,
    burst_json: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = json.loads(burst_json.read_text())
    data["hold_buckets"] = buckets  # written by hand, or by another version
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(data))
    assert main(["advise", "--from-replay", str(broken), "--preflight", "--push-users", "9"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: {broken} is not a replay result")
    assert message in err[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--from-replay", "/nonexistent.json"], "cannot read /nonexistent.json"),
        (["--prometheus", "http://127.0.0.1:1"], "cannot reach Prometheus at http://127.0.0.1:1"),
        (["--prometheus", "localhost:9090"], "not an http(s) URL"),
        (
            ["--prometheus", "http://127.0.0.1:1", "--window", "5 minutes"],
            "not a Prometheus duration",
        ),
        (["--prometheus", "http://127.0.0.1:1", "--window", "1m1h"], "not a Prometheus duration"),
        (["--prometheus", "http://127.0.0.1:1", "--window", "0"], "--window: the window must be"),
        (["--prometheus", "http://127.0.0.1:1", "--window", "1h30m"], "cannot reach Prometheus"),
        (["--from-replay", "{replay}", "--rate", "-1"], "--rate, --ramp and --push-ramp must"),
        (
            ["--from-replay", "{replay}", "--requests-per-user", "0"],
            "error: --requests-per-user must be above 0, got 0",
        ),
        (["--from-replay", "{replay}", "--p-wait", "0"], "--p-wait must be between 0 and 1"),
        (
            ["--from-replay", "{replay}", "--burst-wait", "0"],
            "--burst-wait must be positive, got 0",
        ),
        (["--from-replay", "{replay}", "--preflight"], "--preflight needs --push-users"),
        (["--from-replay", "{replay}", "--workers", "0"], "--workers must be at least 1"),
        (["--from-replay", "{notreplay}"], "is not a replay result"),
        (["--from-replay", "{replay}", "--pooler-pool-size", "0"], "must be at least 1"),
    ],
)
def test_bad_advise_input_is_one_error_line_and_exit_2(
    args: list[str],
    message: str,
    burst_json: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    other = tmp_path / "other.json"
    other.write_text('{"hello": 1}')
    args = [a.format(replay=burst_json, notreplay=other) for a in args]
    assert main(["advise", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


# -- from a real Prometheus -------------------------------------------------------------


def _database_limits(max_connections: int, reserved: int) -> WSGIServer:
    """A target serving one database server's limits, as its sidecar would."""
    registry = CollectorRegistry()
    for metric, value in (
        (m.DATABASE_MAX_CONNECTIONS, max_connections),
        (m.DATABASE_RESERVED_CONNECTIONS, reserved),
    ):
        Gauge(metric.name, metric.help, registry=registry).set(value)
    server, _ = start_http_server(0, "127.0.0.1", registry)
    return server


@pytest.fixture(scope="module")
def measured_prometheus() -> Iterator[tuple[PrometheusServer, rp.Result]]:
    """A real Prometheus that scraped a replay of steady traffic every half second, and the
    limits of two database servers (100 connections, 3 reserved; 500, 10 reserved)."""
    binary = require_binary("prometheus")
    registry = CollectorRegistry()
    server, _ = start_http_server(0, "127.0.0.1", registry)
    databases = [_database_limits(100, 3), _database_limits(500, 10)]
    steady = rp.Scenario(users=0, hold=rp.HoldTime(0.05, 0.1), background_rate=40, duration=8)
    with rp.pool_engine(None, rp.PoolSettings(3, 2, 1.0)) as (engine, _):
        runner = rp.Replay(engine, rp.PoolSettings(3, 2, 1.0), steady, registry=registry,
                           pool_name="steady")  # fmt: skip
        target = f"127.0.0.1:{server.server_port}"
        targets = [target, *(f"127.0.0.1:{db.server_port}" for db in databases)]
        with PrometheusServer(targets, interval=0.5, binary=binary) as prom:
            wait_until(lambda: prom.query('sqlalchemy_pool_size{pool="steady"}'), timeout=15)
            wait_until(lambda: prom.query(f"count({DB_MAX}) == 2"), timeout=15)
            done = threading.Event()
            result: list[rp.Result] = []
            threading.Thread(target=lambda: (result.append(runner.run()), done.set())).start()
            assert done.wait(30)
            # the last scrape is in
            wait_until(lambda: prom.query("sqlalchemy_pool_checkouts_total > 300"), timeout=15)
            yield prom, result[0]
        runner.handle.uninstrument()
    for http in (server, *databases):
        http.shutdown()


def advise_measured(
    capsys: pytest.CaptureFixture[str],
    measured: tuple[PrometheusServer, rp.Result],
    *args: str,
) -> tuple[int, str, list[dict]]:
    """`advise` from what the `measured_prometheus` server measured over the last 10 s."""
    return advise(capsys, "--prometheus", measured[0].url, "--window", "10s", *args)


def test_advice_from_prometheus_measures_rate_hold_and_settings(
    measured_prometheus: tuple[PrometheusServer, rp.Result], capsys: pytest.CaptureFixture[str]
) -> None:
    _, result = measured_prometheus
    code, text, report = advise_measured(
        capsys, measured_prometheus, "--rate", "100", "--database-max-connections", "100"
    )
    assert code == 0, text
    assert "pool 'steady' from Prometheus" in text
    assert "running  pool_size 3, max_overflow 2, pool_timeout 1 s" in text
    a = report[0]["advice"]
    measured_rate = float(text.split("measured ")[1].split(" checkouts/s")[0])
    assert 20 <= measured_rate <= 60  # 40 requests/s of Poisson traffic
    hold = float(text.split("hold mean ")[1].split(" s")[0])
    assert hold == pytest.approx(result.hold["mean"], rel=0.3)
    # 140 requests/s of 0.06 s is about 8.5 connections busy: more than the 5 there are
    assert a["pool_size"] + a["max_overflow"] > 8


def test_the_hold_histogram_is_read_from_prometheus_for_the_simulation(
    measured_prometheus: tuple[PrometheusServer, rp.Result],
) -> None:
    prom, result = measured_prometheus
    (measured,) = from_prometheus(PrometheusAPI(prom.url), window="10s", pool="steady")
    rates = dict(measured.hold_buckets)
    counts = {le: n for le, n in result.hold_buckets}
    # the share of holds under each bound: Prometheus's last 10 s against the whole replay
    for le in (0.05, 0.1, 0.25):
        assert rates[le] / rates[math.inf] == pytest.approx(counts[le] / result.ok, abs=0.15)
    assert measured.holds().mean == measured.hold_mean
    # the holds counted in the window (40 requests/s of Poisson traffic for 10 s), which say
    # how well the mean is known
    assert 200 <= measured.hold_count <= 600
    assert 0.02 < measured.holds().mean_error < 0.1  # holds' CV about 0.6, over sqrt(400)


def test_the_database_budget_comes_from_the_selected_server_alone(
    measured_prometheus: tuple[PrometheusServer, rp.Result], capsys: pytest.CaptureFixture[str]
) -> None:
    prom, _ = measured_prometheus
    instance = {float(s["value"][1]): s["metric"]["instance"] for s in prom.query(DB_MAX)}
    for limit, budget in ((100, 97), (500, 490)):
        selector = f'instance="{instance[limit]}"'
        code, text, report = advise_measured(
            capsys, measured_prometheus, "--rate", "100", "--database-selector", selector
        )
        assert code == 0, text
        assert report[0]["advice"]["database_budget"] == budget, text


def test_preflight_from_prometheus_reads_the_settings_in_force(
    measured_prometheus: tuple[PrometheusServer, rp.Result], capsys: pytest.CaptureFixture[str]
) -> None:
    code, text, _ = advise_measured(
        capsys, measured_prometheus, "--preflight", "--push-users", "500"
    )
    assert code == 1, text
    assert "now      1 pools x (pool_size 3 + max_overflow 2) = 5 connections" in text


def test_advice_from_prometheus_without_the_pool_is_an_error(
    measured_prometheus: tuple[PrometheusServer, rp.Result], capsys: pytest.CaptureFixture[str]
) -> None:
    prom, _ = measured_prometheus
    assert main(["advise", "--prometheus", prom.url, "--pool", "nosuchpool"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "for pool 'nosuchpool'" in err
