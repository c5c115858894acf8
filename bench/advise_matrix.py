"""`advise` against replays: the figures of docs/demo.md's matrix.

One calibration replay (600 users over 1 s on 5 + 10 connections, 1.5 s timeout, 20
requests/s of steady traffic, holds lognormal with median 0.05 s and p95 0.2 s, through
threads), then for each planned push the gate's prediction from it and two replays of the
push (seeds 11 and 12, steady traffic over the simulated window): whether each replayed count
lies in the range the prediction states. Then the settings `advise` recommends from the same
calibration for 1,000 users over 2 s with 100 and with 40 database connections, replayed, and
the smallest pool that replays that push with no timeout on both seeds (by bisection), to
compare the two. Markdown tables; every figure as JSON with --json. Behind a pooler, the same
questions against a real PgBouncer: bench/advise_pooler.py.

    .venv/bin/python bench/advise_matrix.py [--database-url URL] [--json out.json]

SQLite by default; `--database-url postgresql+psycopg://...` replays against PostgreSQL. A
replay's `hold_overhead` (how much longer than drawn its holds ran) and `max_start_lag` say
when the machine, not the pool, moved a figure: the load average is printed with each row.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from typing import Any

from prometheus_client.registry import CollectorRegistry

from pool_exporter.incident import replay as rp
from pool_exporter.incident.measured import from_replay
from pool_exporter.incident.simulate import window
from pool_exporter.incident.sizing import Goals, Target, preflight, recommend
from pool_exporter.incident.traffic import Push

HOLD = rp.HoldTime(0.05, 0.2)
STEADY, PUSH_AT = 20.0, 1.0  # steady requests per second; when the push starts
SEEDS = (11, 12)
CALIBRATION = (600, 1.0, 5, 10, 1.5)
PUSHES = [  # users, ramp, pool_size, max_overflow, pool_timeout
    (200, 2.0, 5, 10, 1.5),
    (300, 3.0, 3, 5, 3.0),
    (300, 3.0, 3, 5, 1.0),
    (400, 0.0, 10, 20, 2.0),
    (600, 1.0, 5, 10, 1.5),
    (1000, 2.0, 5, 10, 1.0),
    (800, 2.0, 5, 5, 3.0),
    (1500, 3.0, 10, 15, 2.0),
    (1200, 1.0, 5, 15, 1.0),
]
RECOMMENDED = (1000, 2.0)  # the push advise sizes for, with 100 and with 40 connections


def scenario(users: int, ramp: float, timeout: float, seed: int) -> rp.Scenario:
    _, end = window(Push(users, ramp), timeout, HOLD.mean)
    return rp.Scenario(
        users=users, ramp=ramp, hold=HOLD, background_rate=STEADY, duration=PUSH_AT + end,
        push_at=PUSH_AT, seed=seed,
    )  # fmt: skip


def replay(url: str | None, users: int, ramp: float, settings: rp.PoolSettings, seed: int) -> Any:
    return rp.replay(
        scenario(users, ramp, settings.pool_timeout, seed), settings, database_url=url,
        registry=CollectorRegistry(),
    )  # fmt: skip


def load() -> str:
    return f"{os.getloadavg()[0]:.1f}"


def matrix(url: str | None, measured: Any) -> list[dict[str, Any]]:
    print(
        "| push | pool | timeout | predicted: verdict, timeouts (range of 31 runs) | "
        "hold ±10 % | replayed (2 seeds) | in the range | at each replay's hold | longest waits | "
        "hold overhead, start lag | load |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for users, ramp, size, overflow, timeout in PUSHES:
        p = preflight(
            measured, 1, Goals(), users=users, ramp=ramp, requests_per_user=1.0,
            settings=(size, overflow, timeout),
        )  # fmt: skip
        settings = rp.PoolSettings(size, overflow, timeout)
        runs = [replay(url, users, ramp, settings, seed) for seed in SEEDS]
        q = p.prediction
        inside = all(q.timeouts_low <= r.timeouts <= q.timeouts_high for r in runs)
        # the same prediction from the hold each replay had, taken as exact: the simulation
        # alone, apart from how far its holds came out from the calibration's
        own = []
        for r in runs:
            held = replace(measured, hold_mean=r.hold["mean"], hold_count=0.0)
            own.append(
                preflight(
                    held, 1, Goals(), users=users, ramp=ramp, requests_per_user=1.0,
                    settings=(size, overflow, timeout),
                ).prediction
            )  # fmt: skip
        fits = all(
            h.timeouts_low <= r.timeouts <= h.timeouts_high for h, r in zip(own, runs, strict=True)
        )
        drift = " / ".join(f"{r.hold_overhead * 1e3:.1f} ms, {r.max_start_lag:.2f} s" for r in runs)
        over = f"over {ramp:g} s" if ramp else "at once"
        print(
            f"| {users} {over} | {size}+{overflow} | {timeout:g} s | {p.verdict}, "
            f"{q.timeouts:g} ({q.timeouts_low}-{q.timeouts_high}) | {p.shorter.timeouts:g} / "
            f"{p.longer.timeouts:g} | {' / '.join(str(r.timeouts) for r in runs)} | "
            f"{'yes' if inside else 'NO'} | "
            f"{' / '.join(f'{h.timeouts:g} ({h.timeouts_low}-{h.timeouts_high})' for h in own)}"
            f"{'' if fits else ' NO'} | "
            f"{' / '.join(f'{r.longest_wait:.2f}' for r in runs)} s | {drift} | {load()} |",
            flush=True,
        )
        rows.append({
            "push": [users, ramp, size, overflow, timeout], "verdict": p.verdict,
            "predicted": q.timeouts, "low": q.timeouts_low, "high": q.timeouts_high,
            "shorter": p.shorter.timeouts, "longer": p.longer.timeouts,
            "measured": [r.timeouts for r in runs], "inside": inside,
            "at_own_hold": [[h.timeouts, h.timeouts_low, h.timeouts_high] for h in own],
            "longest_wait": [r.longest_wait for r in runs],
            "hold_mean": [r.hold.get("mean") for r in runs],
            "hold_overhead": [r.hold_overhead for r in runs],
            "max_start_lag": [r.max_start_lag for r in runs],
        })  # fmt: skip
    return rows


def smallest_without_timeouts(url: str | None, users: int, ramp: float, high: int) -> int:
    """The smallest pool (all overflow above 5) that replays the push with a 2 s timeout and
    no timeout on either seed, by bisection below `high`, which must replay without."""
    low = 1
    while low < high:
        mid = (low + high) // 2
        settings = rp.PoolSettings(min(5, mid), max(0, mid - 5), 2.0)
        if all(replay(url, users, ramp, settings, seed).timeouts == 0 for seed in SEEDS):
            high = mid
        else:
            low = mid + 1
    return high


def recommendations(url: str | None, measured: Any) -> list[dict[str, Any]]:
    users, ramp = RECOMMENDED
    rows = []
    for database in (100, 40):
        a = recommend(measured, Target(users=users, ramp=ramp), 1, Goals(), db_max=database)
        c = a.pool_size + a.max_overflow
        settings = rp.PoolSettings(a.pool_size, a.max_overflow, a.pool_timeout)
        counts = [replay(url, users, ramp, settings, seed).timeouts for seed in SEEDS]
        rows.append({
            "database": database, "pool_size": a.pool_size, "max_overflow": a.max_overflow,
            "pool_timeout": a.pool_timeout, "no_wait": a.no_wait_servers,
            "ride_out": a.ride_out_servers, "replayed": counts,
        })  # fmt: skip
        print(
            f"recommended for {users} users over {ramp:g} s with {database} connections: "
            f"{a.pool_size} + {a.max_overflow} = {c}, pool_timeout {a.pool_timeout:g} s (no-wait "
            f"{a.no_wait_servers}, ride-out {a.ride_out_servers}); replayed: "
            f"{' / '.join(map(str, counts))} timeouts",
            flush=True,
        )
    largest = max(r["pool_size"] + r["max_overflow"] for r in rows)
    smallest = smallest_without_timeouts(url, users, ramp, largest)
    for r in rows:
        r["smallest_without_timeouts"] = smallest
        r["ratio"] = (r["pool_size"] + r["max_overflow"]) / smallest
    ratios = " and ".join(f"{r['ratio']:.2f}x" for r in rows)
    print(
        f"smallest pool that replays it with no timeout on both seeds: {smallest}; the "
        f"recommendations are {ratios} of it (load {load()})"
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="replay against this database (default SQLite)")
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument("--skip-recommendations", action="store_true")
    args = parser.parse_args()
    started = time.monotonic()
    print(f"load average at the start: {load()}")
    users, ramp, size, overflow, timeout = CALIBRATION
    settings = rp.PoolSettings(size, overflow, timeout)
    calibration = replay(args.database_url, users, ramp, settings, 5)
    measured = from_replay(calibration, "calibration")
    print(
        f"calibration: {calibration.timeouts} timeouts, hold mean {measured.hold_mean:.4f} s "
        f"(overhead {calibration.hold_overhead * 1e3:.1f} ms) over {measured.hold_count:g} holds"
    )
    rows = matrix(args.database_url, measured)
    advised = [] if args.skip_recommendations else recommendations(args.database_url, measured)
    print(f"took {time.monotonic() - started:.0f} s; load average at the end: {load()}")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({
                "database": args.database_url or "sqlite",
                "calibration_hold_mean": measured.hold_mean,
                "calibration_hold_overhead": calibration.hold_overhead,
                "rows": rows, "recommendations": advised,
            }, out, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
