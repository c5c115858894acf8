"""QueuePool's wake-ups in a replay: how often a woken waiter loses the returned connection to a
newcomer, the figure behind the simulation's wake-up window (`simulate.WAKE`).

A returned connection is `put()` back and `notify()` wakes the longest waiter, which must run
again before it takes it; a caller arriving in that moment takes it first, and the woken one
waits again at the back of the line. This replays the advise matrix's pushes (the calibration's
holds and steady traffic, bench/advise_matrix.py) with the pool's queue watched: each
`Condition.wait()` that returned notified is a wake-up, and one followed by another wait in the
same checkout (or by its timeout) was lost. While the push's users arrive at λ per second, a
loss share p is what a connection left open to newcomers for an exponential time of mean W
gives when p = λW / (1 + λW): W = p / ((1 - p) λ) is printed for each push, then the median
and the spread of W over the pushes of this run and of earlier ones (`--also`), which
`simulate.WAKE` and `simulate.WAKE_SPREAD` are.

    .venv/bin/python bench/pool_wakeups.py [--database-url URL] [--seeds 11 12]
        [--json out.json] [--also earlier.json ...]

Watching costs a subclassed Condition and a wrapped `Queue.get` (SQLAlchemy's own code runs
unchanged inside both); nothing of it is in the package.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import threading
from dataclasses import dataclass, field
from time import perf_counter
from typing import Any

from advise_matrix import PUSH_AT, PUSHES, STEADY, scenario
from prometheus_client.registry import CollectorRegistry

from pool_exporter.incident import replay as rp


@dataclass
class Watch:
    """Every notified wake-up of one pool's queue: (seconds into the run, lost)."""

    t0: float = 0.0
    wakes: list[tuple[float, bool]] = field(default_factory=list)
    _local: threading.local = field(default_factory=threading.local)

    def install(self, queue: Any) -> None:
        watch = self
        original_get = queue.get

        class Watched(threading.Condition):
            def wait(self, timeout: float | None = None) -> bool:
                notified = super().wait(timeout)
                if notified:  # the checkout's earlier wake-up, if any, was lost
                    watch._woken(perf_counter())
                return notified

        def get(block: bool = True, timeout: float | None = None) -> Any:
            watch._local.woken = None
            try:
                return original_get(block, timeout)
            except BaseException:
                watch._end(lost=True)  # woken, then timed out: lost as well
                raise
            finally:
                watch._end(lost=False)

        queue.not_empty = Watched(queue.mutex)
        queue.get = get

    def _woken(self, now: float) -> None:
        self._end(lost=True)
        self._local.woken = now - self.t0

    def _end(self, *, lost: bool) -> None:
        at = getattr(self._local, "woken", None)
        if at is not None:
            self.wakes.append((at, lost))  # list.append: one bytecode, safe across threads
            self._local.woken = None


def replay(url: str | None, push: tuple[int, float, int, int, float], seed: int) -> dict[str, Any]:
    users, ramp, size, overflow, timeout = push
    settings = rp.PoolSettings(size, overflow, timeout)
    watch = Watch()
    with rp.pool_engine(url, settings) as (engine, _):
        watch.install(engine.pool._pool)  # type: ignore[attr-defined]
        runner = rp.Replay(
            engine, settings, scenario(users, ramp, timeout, seed), registry=CollectorRegistry()
        )
        watch.t0 = perf_counter()
        result = runner.run()
        runner.handle.uninstrument()
    rate = users / ramp + STEADY if ramp else 0.0
    during = [lost for at, lost in watch.wakes if PUSH_AT <= at <= PUSH_AT + ramp]
    after = [lost for at, lost in watch.wakes if at > PUSH_AT + ramp]
    share = sum(during) / len(during) if during else 0.0
    return {
        "push": list(push),
        "seed": seed,
        "timeouts": result.timeouts,
        "hold_mean": result.hold.get("mean"),
        "max_start_lag": result.max_start_lag,
        "load": os.getloadavg()[0],
        "during": [len(during), sum(during)],
        "after": [len(after), sum(after)],
        "rate": rate,
        "wake": share / ((1 - share) * rate) if rate and during and share < 1 else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="replay against this database (default SQLite)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[11, 12])
    parser.add_argument("--json", help="write every figure here")
    parser.add_argument(
        "--also", nargs="*", default=[], help="earlier runs' --json files, pooled in the summary"
    )
    args = parser.parse_args()
    print("| push | pool | seed | timeouts | wake-ups during the push: lost | after it: lost "
          "| W | load |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    rows = []
    for push in PUSHES:
        if push[1] == 0:  # all at once: no arrival rate to divide by
            continue
        for seed in args.seeds:
            row = replay(args.database_url, push, seed)
            rows.append(row)
            (n, lost), (m, later) = row["during"], row["after"]
            users, ramp, size, overflow, _ = push
            w = "-" if row["wake"] is None else f"{row['wake'] * 1e6:.0f} µs"
            print(
                f"| {users} over {ramp:g} s | {size}+{overflow} | {seed} | {row['timeouts']} | "
                f"{lost} of {n} ({lost / max(1, n):.1%}) | {later} of {m} | {w} | "
                f"{row['load']:.1f} |",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    for path in args.also:
        with open(path) as earlier:
            rows += json.load(earlier)
    summarize(rows)


def summarize(rows: list[dict[str, Any]]) -> None:
    """The median W over the pushes with 100 wake-ups or more, and the spread of its log from
    run to run, less what counting a share of n wake-ups adds by itself ((1 - p) / np)."""
    found = [
        (math.log(r["wake"]), (1 - lost / n) / lost)
        for r in rows
        for n, lost in [r["during"]]
        if r["wake"] and n >= 100 and lost > 0
    ]
    if len(found) < 2:
        return
    logs = [x for x, _ in found]
    noise = statistics.fmean(v for _, v in found)
    spread = math.sqrt(max(0.0, statistics.variance(logs) - noise))
    print(
        f"{len(found)} pushes with 100 wake-ups or more: median W "
        f"{math.exp(statistics.median(logs)) * 1e6:.0f} µs, spread of its log {spread:.2f} "
        f"(counting noise {math.sqrt(noise):.2f} taken out)"
    )


if __name__ == "__main__":
    main()
