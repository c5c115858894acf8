"""`pool-exporter advise` behind a pooler given by its flags: the app pools, the pooler and the
database sized together (stacksizing.py), through the command as a user runs it.

The calibration is a short replay on this machine; every assertion holds for any hold time it
measures within ten times the one drawn, so the module need not run alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pool_exporter.incident import replay as rp
from pool_exporter.incident.sizing import fig

from .support import cli

# 200 users in 0.5 s on 5 + 10 connections of about 0.07 s, 1.5 s pool timeout.
CALIBRATION = rp.Scenario(users=200, ramp=0.5, hold=rp.HoldTime(0.05, 0.2), seed=5)
# A fleet of 4 workers on each of 3 instances behind a database of 100 connections, planning
# for 2,000 users in 0.5 s that may wait 1 s: 280 transactions at once, 1.4 s of work for
# each of 100 connections. No pooler within that budget serves the push at once.
FLEET = (
    "--database-max-connections", "100", "--workers", "4", "--instances", "3",
    "--users", "2000", "--ramp", "0.5", "--request-timeout", "1",
)  # fmt: skip


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = rp.replay(CALIBRATION, rp.PoolSettings(5, 10, 1.5), registry=CollectorRegistry())
    assert result.ok > 0
    path = tmp_path_factory.mktemp("advise-pooler") / "calibration.json"
    rp.write_json(result, str(path))
    return path


def advise(replayed: Path, *args: str) -> tuple[str, dict]:
    """`advise --from-replay` for FLEET with ARGS: it must succeed; its text and its advice."""
    done = cli.run("advise", "--from-replay", str(replayed), *FLEET, *args, "--json", "-")
    assert done.returncode == 0, done.stdout + done.stderr
    text, _, data = done.stdout.partition("\n[")
    return text, json.loads("[" + data)[0]["advice"]


def test_behind_a_transaction_pooler_advise_sizes_the_pooler_and_paces_what_no_size_serves(
    replayed: Path,
) -> None:
    text, a = advise(
        replayed, "--pooler-mode", "transaction", "--pooler-pool-size", "40",
        "--pooler-max-client-conn", "2000",
    )  # fmt: skip
    assert "larger app pools would only move the queue into the pooler" in text
    assert "even 100 server connections (the budget) do not serve" in text
    pooler, push = a["pooler"], a["push"]
    assert pooler["default_pool_size"] == 100 and pooler["max_client_conn"] >= 2000
    assert 0 < push["rate"] < 100 / 0.05  # below what 100 connections serve at the mean hold
    assert f"recommend sending the push at {fig(push['rate'])} users/s" in text
    # In transaction mode every worker may use every server connection.
    assert a["pool_size"] + a["max_overflow"] == 100
    # Its predicted waits, layer by layer, and no timeout or late request in any run.
    assert set(a["waits"]) == {"pool", "pooler"}
    assert a["predicted"]["timeouts_high"] == a["predicted"]["late_high"] == 0
    assert "waits    in the pooler: median" in text


def test_a_pooler_larger_than_the_database_and_too_few_clients_are_both_corrected(
    replayed: Path,
) -> None:
    text, a = advise(
        replayed, "--pooler-mode", "transaction", "--pooler-pool-size", "150",
        "--pooler-max-client-conn", "50",
    )  # fmt: skip
    fleet = a["pools"] * (a["pool_size"] + a["max_overflow"])
    assert a["pooler"]["max_client_conn"] >= fleet > 50
    assert f"raise the pooler's max_client_conn to {a['pooler']['max_client_conn']}" in text
    assert (
        text.count("the pooler may open 150 server connections, more than the database's 100") == 1
    )
    assert a["pooler"]["default_pool_size"] <= 100 and not a["exhausts_database"]


def test_behind_a_session_pooler_the_fleets_connections_are_the_poolers(replayed: Path) -> None:
    text, a = advise(
        replayed, "--pooler-mode", "session", "--pooler-pool-size", "500",
        "--pooler-max-client-conn", "2000",
    )  # fmt: skip
    assert "the pooler may open 500 server connections, more than the database's 100" in text
    servers = a["pooler"]["default_pool_size"]
    assert servers <= 100
    # Each app connection keeps a server connection: the fleet's are the pooler's.
    assert a["pools"] * (a["pool_size"] + a["max_overflow"]) <= servers
