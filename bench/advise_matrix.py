"""`advise --preflight` against replays: the figures of docs/demo.md's matrix.

One calibration replay (600 users over 1 s on 5 + 10 connections, 1.5 s timeout, 20
requests/s of steady traffic, holds lognormal with median 0.05 s and p95 0.2 s, on SQLite
through threads), then for each planned push the gate's prediction from it and two replays
of the push (seeds 11 and 12, steady traffic over the simulated window). Prints one row per
push as a Markdown table, and the JSON of every figure with --json.

    .venv/bin/python bench/advise_matrix.py [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time

from prometheus_client.registry import CollectorRegistry

from pool_exporter.incident import replay as rp
from pool_exporter.incident.measured import from_replay
from pool_exporter.incident.simulate import window
from pool_exporter.incident.sizing import Goals, preflight
from pool_exporter.incident.traffic import Push

HOLD = rp.HoldTime(0.05, 0.2)
STEADY, PUSH_AT = 20.0, 1.0  # steady requests per second; when the push starts
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


def scenario(users: int, ramp: float, timeout: float, seed: int) -> rp.Scenario:
    _, end = window(Push(users, ramp), timeout, HOLD.mean)
    return rp.Scenario(
        users=users, ramp=ramp, hold=HOLD, background_rate=STEADY, duration=PUSH_AT + end,
        push_at=PUSH_AT, seed=seed,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    started = time.monotonic()
    calibration = rp.replay(
        scenario(600, 1.0, 1.5, 5), rp.PoolSettings(5, 10, 1.5), registry=CollectorRegistry()
    )
    m = from_replay(calibration, "calibration")
    print(f"calibration: {calibration.timeouts} timeouts, hold mean {m.hold_mean:.4f} s")
    print("| push | pool | timeout | predicted: verdict, timeouts (range) | hold ±10 % | "
          "measured (2 seeds) | longest waits |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for users, ramp, size, overflow, timeout in PUSHES:
        p = preflight(
            m, 1, Goals(), users=users, ramp=ramp, requests_per_user=1.0,
            settings=(size, overflow, timeout),
        )  # fmt: skip
        runs = [
            rp.replay(
                scenario(users, ramp, timeout, seed),
                rp.PoolSettings(size, overflow, timeout),
                registry=CollectorRegistry(),
            )
            for seed in (11, 12)
        ]
        q = p.prediction
        over = f"over {ramp:g} s" if ramp else "at once"
        print(
            f"| {users} {over} | {size}+{overflow} | {timeout:g} s | {p.verdict}, "
            f"{q.timeouts:g} ({q.timeouts_low}-{q.timeouts_high}) | {p.shorter.timeouts:g} / "
            f"{p.longer.timeouts:g} | {' / '.join(str(r.timeouts) for r in runs)} | "
            f"{' / '.join(f'{r.longest_wait:.2f}' for r in runs)} s |",
            flush=True,
        )
        rows.append({
            "push": [users, ramp, size, overflow, timeout], "verdict": p.verdict,
            "predicted": q.timeouts, "low": q.timeouts_low, "high": q.timeouts_high,
            "shorter": p.shorter.timeouts, "longer": p.longer.timeouts,
            "measured": [r.timeouts for r in runs],
            "longest_wait": [r.longest_wait for r in runs],
            "hold_mean": [r.hold.get("mean") for r in runs],
        })  # fmt: skip
    print(f"took {time.monotonic() - started:.0f} s")
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"calibration_hold_mean": m.hold_mean, "rows": rows}, out, indent=1)


if __name__ == "__main__":
    main()
