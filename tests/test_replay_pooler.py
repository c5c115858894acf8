"""`replay --through-pooler`: where the time went, on a real PgBouncer in transaction mode in
front of the real PostgreSQL, and straight to PostgreSQL for comparison."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from pool_exporter.cli import main
from pool_exporter.incident.results import Result

from .support import pgbouncer as pgb

pytestmark = pytest.mark.postgres

# 12 users at once, each holding its connection 0.2 s inside a transaction, on an app pool
# that opens a connection for every one of them (6 + 6): the app pool never makes anyone wait.
USERS, HOLD = 12, 0.2
APP_POOL = ("--pool-size", "6", "--max-overflow", "6", "--pool-timeout", "30")
BURST = ("--users", str(USERS), "--ramp", "0", "--hold-median", str(HOLD), "--hold-p95", str(HOLD))


def replay_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[Result, list[str]]:
    """`pool-exporter replay ARGS --json -`: the result read back, and the summary's lines."""
    assert main(["replay", *BURST, *APP_POOL, *args, "--json", "-"]) == 0
    captured = capsys.readouterr()
    return Result.from_json(json.loads(captured.out)), captured.err.splitlines()


def test_a_pooler_smaller_than_the_app_pool_is_where_the_burst_waits(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pgb.require()
    # Two server connections for twelve transactions of 0.2 s: six rounds, 1.2 s of queue, in
    # which the last pair waits about 1 s and all of them together about 6 s.
    with pgb.running(pool_mode="transaction", pool_size=2, max_client_conn=100) as bouncer:
        r, printed = replay_json(capsys, f"--database-url={bouncer.url()}", "--through-pooler")
        stats = {row["database"]: row for row in bouncer.admin("SHOW STATS")}["test"]
    assert (r.ok, r.timeouts, r.errors) == (USERS, 0, 0)
    assert r.scenario["through_pooler"] and r.scenario["hold_in_transaction"]  # implied
    assert list(r.layers) == ["pool", "pooler", "database"]
    pool, pooler, database = r.layers["pool"], r.layers["pooler"], r.layers["database"]
    assert pool["max"] < 0.5 <= pooler["max"]
    # (the pool's waits are its new connections' set-up through PgBouncer: 0.01-0.03 s each,
    # up to 0.31 s in all on a busy machine)
    assert pooler["total"] >= 3.0 and pooler["total"] > 5 * pool["total"]
    # the database's time is the hold, never the queue in front of it
    assert HOLD <= database["p50"] <= database["max"] < pooler["max"]
    assert database["total"] == pytest.approx(USERS * HOLD, abs=1.0)
    # PgBouncer's own count of its clients' wait agrees (microseconds); ours adds one round
    # trip a request, and PgBouncer counts the transaction's time with the wait in it
    theirs = float(stats["total_wait_time"] / Decimal(10**6))
    assert theirs == pytest.approx(pooler["total"], abs=0.5)
    xact = float(stats["total_xact_time"] / Decimal(10**6))
    assert xact - theirs == pytest.approx(database["total"], abs=0.5)
    went = printed.index(f"where the time went in the {USERS} ok requests:")
    layers = [line.split()[0] for line in printed[went + 1 : went + 4]]
    assert layers == ["pool", "pooler", "database"]
    assert printed[went + 2].startswith(f"  pooler wait   p50 {pooler['p50']:.2f} s, p99 ")


def test_straight_to_postgresql_there_is_no_pooler_line(
    pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    r, printed = replay_json(capsys, f"--database-url={pg_url}", "--hold-in-transaction")
    assert (r.ok, r.timeouts, r.errors) == (USERS, 0, 0)
    assert list(r.layers) == ["pool", "database"]
    assert r.layers["pool"]["max"] < 0.5
    assert HOLD <= r.layers["database"]["p50"] < 1.0
    assert not any("pooler" in line for line in printed)
    went = printed.index(f"where the time went in the {USERS} ok requests:")
    assert [line.split()[0] for line in printed[went + 1 : went + 3]] == ["pool", "database"]
