"""`advise` behind a real PgBouncer: the figures of docs/demo.md's three-layer table.

For each case, against PostgreSQL behind PgBouncer 1.18 (tests/support/pgbouncer.py, started
fresh per case): a calibration replay through the pooler at the incident's settings
(`--through-pooler`: holds in a transaction, lognormal with median 0.05 s and p95 0.2 s, a
push at once, 10 requests/s of steady traffic), then `pool-exporter advise --from-replay`
with the pooler's flags and the database's limit, then the recommendation applied (PgBouncer
reloaded to its default_pool_size and max_client_conn, the app pool to its pool_size,
max_overflow and pool_timeout, the push sent over users/rate seconds when advise paces it)
and the same push replayed through the pooler on seeds 11 and 12. The deadline is the
calibration's pool_timeout, as advise takes it behind a pooler: a measured request is within
it when its wait for the app pool and its wait in the pooler, together, are no longer.
A Markdown table; every figure as JSON with --json. Nothing here asserts a timing.

    .venv/bin/python bench/advise_pooler.py [--database-url URL] [--json out.json]

Run from the repository root (it imports tests/support/pgbouncer.py). The load average is
printed with each row: a busy machine moves these figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.registry import CollectorRegistry
from sqlalchemy import make_url

from pool_exporter.incident import replay as rp
from pool_exporter.incident.simulate import window
from pool_exporter.incident.traffic import Push

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.support import pgbouncer

DATABASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
HOLD = rp.HoldTime(0.05, 0.2)
STEADY, PUSH_AT = 10.0, 1.0  # steady requests per second; when the push starts
SEEDS = (11, 12)
CALIBRATION_SEED = 5
CLIENTS = 200  # PgBouncer's max_client_conn at calibration: above every app pool here


@dataclass(frozen=True)
class Case:
    name: str
    mode: str  # PgBouncer's pool_mode
    pooler: int  # its default_pool_size at calibration
    users: int  # the push, all at once
    pool_size: int
    max_overflow: int
    pool_timeout: float
    database: int  # --database-max-connections, as given to advise

    @property
    def settings(self) -> rp.PoolSettings:
        return rp.PoolSettings(self.pool_size, self.max_overflow, self.pool_timeout)


CASES = [
    # the queue in the pooler: 30 app connections on 5 server connections
    Case("transaction, pooler < app pool", "transaction", 5, 300, 10, 20, 2.0, 97),
    # each app connection keeps a server connection: 15 on 10
    Case("session, pooler < app pool", "session", 10, 300, 5, 10, 2.0, 97),
    # 600 x 0.07 s of database time on 20 connections is past the 1.5 s deadline: pacing
    Case("transaction, database budget 20", "transaction", 5, 600, 10, 20, 1.5, 20),
    # a tighter deadline: 400 x 0.07 s on 5 server connections, within 1 s
    Case("transaction, deadline 1 s", "transaction", 5, 400, 10, 20, 1.0, 97),
    # the same in session mode: the app pool no larger than the pooler's, and paced
    Case("session, database budget 20", "session", 10, 600, 5, 10, 1.5, 20),
]


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def run_replay(
    url: str, users: int, ramp: float, settings: rp.PoolSettings, seed: int, *, deadline: float
) -> tuple[rp.Result, float]:
    """A replay through the pooler, and the longest wait of a served request in the app pool
    and the pooler together (the result keeps each layer's longest, not their sum)."""
    _, end = window(Push(users, ramp), deadline, HOLD.mean)
    scenario = rp.Scenario(
        users=users, ramp=ramp, hold=HOLD, background_rate=STEADY, duration=PUSH_AT + end,
        push_at=PUSH_AT, seed=seed, hold_in_transaction=True, through_pooler=True,
    )  # fmt: skip
    with rp.pool_engine(url, settings) as (engine, _):
        runner = rp.Replay(engine, settings, scenario, registry=CollectorRegistry())
        try:
            result = runner.run()
        finally:
            runner.handle.uninstrument()
    # (arrival, start, pool wait, hold, outcome, planned hold, pooler wait) per request: the
    # runner's own record, read for the per-request sum no public figure carries
    total = max((d[2] + d[6] for d in runner._done if d[4] == rp.OK), default=0.0)
    return result, total


def advise(case: Case, calibration: rp.Result, pooler: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="advise-pooler-") as tmp:
        source, out = Path(tmp) / "calibration.json", Path(tmp) / "advice.json"
        rp.write_json(calibration, str(source))
        command = [
            str(Path(sys.executable).with_name("pool-exporter")), "advise",
            "--from-replay", str(source), "--pooler-mode", case.mode,
            "--pooler-pool-size", str(pooler), "--pooler-max-client-conn", str(CLIENTS),
            "--database-max-connections", str(case.database), "--json", str(out),
        ]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"advise failed ({done.returncode}): {done.stderr.strip()}")
        advice: dict[str, Any] = json.loads(out.read_text())[0]["advice"]
        advice["text"] = done.stdout
        return advice


def layer_max(result: rp.Result, name: str) -> float:
    return result.layers.get(name, {}).get("max", 0.0)


def open_servers(bouncer: pgbouncer.PgBouncer, database: str) -> int:
    """PgBouncer's server connections to `database` now: idle ones stay open (for
    server_idle_timeout), so after a replay this is the most it opened since the reload."""
    kinds = ("sv_active", "sv_idle", "sv_used", "sv_tested", "sv_login")
    rows = [p for p in bouncer.admin("SHOW POOLS") if p["database"] == database]
    return sum(int(str(p[k])) for p in rows for k in kinds)


def one(case: Case, url: str) -> dict[str, Any]:
    target = make_url(url)
    with pgbouncer.running(
        pool_mode=case.mode, pool_size=case.pooler, max_client_conn=CLIENTS,
        pg_host=target.host or "127.0.0.1", pg_port=target.port or 5432,
    ) as bouncer:  # fmt: skip
        through = bouncer.url(target.database or "test")
        deadline = case.pool_timeout
        calibration, cal_total = run_replay(
            through, case.users, 0.0, case.settings, CALIBRATION_SEED, deadline=deadline
        )
        a = advise(case, calibration, case.pooler)
        pooler = a["pooler"]
        push = a.get("push")
        ramp = case.users / push["rate"] if push else 0.0
        bouncer.reload(
            pool_size=pooler["default_pool_size"], max_client_conn=pooler["max_client_conn"]
        )
        settings = rp.PoolSettings(a["pool_size"], a["max_overflow"], a["pool_timeout"])
        runs = [
            run_replay(through, case.users, ramp, settings, s, deadline=deadline) for s in SEEDS
        ]
        servers = open_servers(bouncer, target.database or "test")
    predicted = a["predicted"] or {}
    measured = [
        {
            "timeouts": r.timeouts, "errors": r.errors, "error_types": r.error_types,
            "ok": r.ok, "requests": r.requests, "longest_pool_wait": layer_max(r, "pool"),
            "longest_pooler_wait": layer_max(r, "pooler"), "longest_total_wait": total,
            "database_p99": r.layers.get("database", {}).get("p99"),
            "hold_overhead": r.hold_overhead, "max_start_lag": r.max_start_lag,
            "within_deadline": r.timeouts == 0 and r.errors == 0 and total <= deadline,
        }
        for r, total in runs
    ]  # fmt: skip
    return {
        "case": case.name, "mode": case.mode, "users": case.users, "deadline": deadline,
        "calibration": {
            "pooler": case.pooler, "pool": [case.pool_size, case.max_overflow, case.pool_timeout],
            "database_max_connections": case.database, "timeouts": calibration.timeouts,
            "errors": calibration.errors, "ok": calibration.ok, "layers": calibration.layers,
            "longest_pooler_wait": layer_max(calibration, "pooler"),
            "longest_total_wait": cal_total,
        },
        "advice": {
            "pool_size": a["pool_size"], "max_overflow": a["max_overflow"],
            "pool_timeout": a["pool_timeout"], "pooler": pooler, "push": push,
            "warnings": a.get("warnings", []),
            "predicted": {
                "timeouts_high": predicted.get("timeouts_high"),
                "late_high": predicted.get("late_high"),
                "longest_wait": predicted.get("longest_wait"),
                "longest_wait_high": predicted.get("longest_wait_high"),
                "layers": predicted.get("layers"),
            },
            "text": a["text"],
        },
        "measured": measured, "pooler_servers_after": servers, "load": load(),
    }  # fmt: skip


def row(r: dict[str, Any]) -> str:
    c, a, m = r["calibration"], r["advice"], r["measured"]
    q = a["predicted"]
    pace = f"{a['push']['rate']:g} users/s" if a["push"] else "at once"
    pool = f"{a['pool_size']}+{a['max_overflow']}, {a['pool_timeout']:g} s"

    def both(key: str, fmt: str = "{}") -> str:
        return " / ".join(fmt.format(x[key]) for x in m)

    served = "yes" if all(x["within_deadline"] for x in m) else "**NO**"
    return (
        f"| {r['case']}: {r['users']} at once, {c['pool'][0]}+{c['pool'][1]}, pooler "
        f"{c['pooler']}, deadline {r['deadline']:g} s | {c['timeouts']}, "
        f"{c['longest_pooler_wait']:.2f} s | {pool}; pooler {a['pooler']['default_pool_size']}; "
        f"{pace} | {q['timeouts_high']}, {q['late_high']}, {q['longest_wait']:.2f} s (up to "
        f"{q['longest_wait_high']:.2f} s) | "
        f"{both('timeouts')} | {both('errors')} | {both('longest_pool_wait', '{:.2f}')} s | "
        f"{both('longest_pooler_wait', '{:.2f}')} s | {both('longest_total_wait', '{:.2f}')} s | "
        f"{served} | {r['load']} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=DATABASE, help=f"PostgreSQL ({DATABASE})")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    started = time.monotonic()
    print(f"load average at the start: {load()}")
    print(
        "| case | calibration: timeouts, longest pooler wait | advised: app pool, pooler, pace | "
        "predicted: timeouts, late (most in a run), longest wait (median run, up to) | "
        "replayed timeouts (2 seeds) | "
        "errors | longest pool wait | longest pooler wait | longest total wait | all within "
        "the deadline | load |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |", flush=True)
    rows = []
    for case in CASES:
        r = one(case, args.database_url)
        rows.append(r)
        print(row(r), flush=True)
    for r in rows:
        for w in r["advice"]["warnings"]:
            print(f"{r['case']}: advise warns: {w}")
    print(f"took {time.monotonic() - started:.0f} s; load average at the end: {load()}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"database": args.database_url, "rows": rows}, out, indent=1, default=str)


if __name__ == "__main__":
    main()
