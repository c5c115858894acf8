"""`pool-exporter advise`: the command of the sizing model (sizing.py), with the working shown.

Exit code 1 from `--preflight` when the push would time out (or is at risk), so a pipeline's
job stops before sending.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import asdict, replace
from functools import partial
from pathlib import Path
from typing import Any

from pool_exporter.durations import seconds
from pool_exporter.errors import CliError

from . import stacksizing
from .arguments import add_pool_arguments
from .measured import Measured, NoData, PoolerLimits, from_prometheus, from_replay
from .promapi import PrometheusAPI, PrometheusError
from .results import Result
from .simulate import Waits
from .sizing import (
    AT_RISK,
    TIMES_OUT,
    Advice,
    BadGoal,
    Goals,
    Preflight,
    Target,
    fig,
    preflight,
    recommend,
)

EXIT_PUSH_UNSAFE = 1
# The flag that sets each of the model's goals (sizing.Goals)
GOAL_FLAGS = {
    "p_wait": "--p-wait",
    "mean_wait": "--max-wait",
    "burst_wait": "--burst-wait",
    "request_timeout": "--request-timeout",
}


# -- the command ------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prometheus", metavar="URL", help="a Prometheus server's base URL")
    source.add_argument("--from-replay", metavar="FILE", help="a `replay --json` result")
    parser.add_argument("--window", default="15m", help="how far back to measure (15m)")
    parser.add_argument("--pool", help="only this pool (the `pool` label)")
    parser.add_argument(
        "--selector", default="", help="more label matchers, for example 'job=\"api\"'"
    )
    parser.add_argument(
        "--database-selector",
        help="label matchers of the database server's series (default: --selector's)",
    )
    parser.add_argument("--at", type=float, help="evaluate at this unix time (default: now)")
    parser.add_argument("--rate", type=float, default=0.0, help="extra requests/s to plan for")
    parser.add_argument("--users", type=int, help="plan for a push of this many users ...")
    parser.add_argument("--ramp", type=float, default=0.0, help="... arriving over seconds")
    parser.add_argument(
        "--workers", type=int, help="worker processes per instance (default: as measured)"
    )
    parser.add_argument("--instances", type=int, default=1, help="instances (1)")
    parser.add_argument("--p-wait", type=float, default=0.05, help="share that may wait (0.05)")
    parser.add_argument("--max-wait", type=float, default=0.1, help="mean wait goal, s (0.1)")
    parser.add_argument(
        "--burst-wait", type=float, default=1.0, help="longest queue in a push, s (1)"
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        help="the longest a caller may wait for a connection, s (10; behind a pooler, the "
        "pool_timeout measured: what users wait today)",
    )
    parser.add_argument("--database-max-connections", type=int, help="the server's limit")
    parser.add_argument(
        "--pooler-max-client-conn",
        type=int,
        help="PgBouncer's max_client_conn, summed over the poolers (default: as the sidecar "
        "measured, if it watches one)",
    )
    parser.add_argument(
        "--pooler-pool-size",
        type=int,
        help="server connections the poolers may open to the database (their pool_size)",
    )
    parser.add_argument(
        "--pooler-mode",
        choices=("session", "transaction", "statement"),
        help="its pool_mode (default: as measured, or transaction when only the other "
        "--pooler-* flags are given)",
    )
    parser.add_argument(
        "--preflight", action="store_true", help="judge a planned push with today's settings"
    )
    parser.add_argument("--push-users", type=int, help="with --preflight: users to notify")
    parser.add_argument("--push-ramp", type=float, default=0.0, help="... over seconds (0)")
    parser.add_argument(
        "--requests-per-user", type=float, default=1.0, help="requests each user makes (1)"
    )
    parser.add_argument(
        "--accept-risk",
        action="store_true",
        help="with --preflight: exit 0 for a push at risk (only one that would time out fails)",
    )
    add_pool_arguments(parser, in_force=True)  # with --preflight: the settings in force
    parser.add_argument("--json", metavar="FILE", help="also write the advice as JSON")


def measure(args: argparse.Namespace) -> list[Measured]:
    try:
        if args.from_replay:
            path = Path(args.from_replay)
            try:
                data = json.loads(path.read_text())
                return [from_replay(Result.from_json(data), str(path))]
            except OSError as exc:
                raise CliError(f"cannot read {path}: {exc.strerror}") from None
            except (ValueError, TypeError, KeyError) as exc:
                raise CliError(f"{path} is not a replay result: {exc}") from None
        if seconds(args.window) <= 0:
            raise ValueError("the window must be longer than 0")
        return from_prometheus(
            PrometheusAPI(args.prometheus),
            window=args.window,
            pool=args.pool,
            matchers=args.selector,
            database_matchers=(
                args.selector if args.database_selector is None else args.database_selector
            ),
            at=args.at,
        )
    except (PrometheusError, NoData) as exc:
        raise CliError(str(exc)) from None
    except ValueError as exc:
        raise CliError(f"--window: {exc}") from None


def run(args: argparse.Namespace) -> int:
    goals = Goals(args.p_wait, args.max_wait, args.burst_wait, args.request_timeout or 10.0)
    for name in ("workers", "instances", "users", "push_users"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CliError(f"--{name.replace('_', '-')} must be at least 1")
    if args.rate < 0 or args.ramp < 0 or args.push_ramp < 0:
        raise CliError("--rate, --ramp and --push-ramp must not be negative")
    if args.requests_per_user <= 0:
        raise CliError(f"--requests-per-user must be above 0, got {args.requests_per_user:g}")
    if args.preflight and args.push_users is None:
        raise CliError("--preflight needs --push-users N (the push to judge)")
    try:
        goals.check()
    except BadGoal as exc:
        raise CliError(f"{GOAL_FLAGS[exc.goal]} {exc.problem}") from None
    report: list[dict[str, Any]] = []
    code = 0
    for found in measure(args):
        measured = _with_pooler_flags(found, args)
        pools = (args.workers or measured.pools) * args.instances
        print(f"pool {measured.pool!r} from {measured.source}")
        print(_measured_line(measured, pools))
        layered = measured.pooler is not None
        if layered and args.request_timeout is None and measured.pool_timeout is not None:
            goals = replace(goals, request_timeout=measured.pool_timeout)
        try:
            if args.preflight:
                p = _preflight(measured, pools, goals, args)
                _print_preflight(p, args.push_users)
                report.append({"preflight": {**asdict(p), "safe": p.safe}})
                if p.verdict == TIMES_OUT or (p.verdict == AT_RISK and not args.accept_risk):
                    code = EXIT_PUSH_UNSAFE
            else:
                target = _target(args, measured)
                advise = stacksizing.recommend if layered else recommend
                a = advise(measured, target, pools, goals, db_max=args.database_max_connections)
                _print_advice(a)
                report.append({"advice": asdict(a)})
        except ValueError as exc:
            raise CliError(str(exc)) from None
    if args.json:
        text = json.dumps(report, indent=1, default=str) + "\n"
        if args.json == "-":
            sys.stdout.write(text)
        else:
            Path(args.json).write_text(text)
    return code


def _with_pooler_flags(measured: Measured, args: argparse.Namespace) -> Measured:
    given = {
        "max_client_conn": args.pooler_max_client_conn,
        "pool_size": args.pooler_pool_size,
        "mode": args.pooler_mode,
    }
    given = {k: v for k, v in given.items() if v is not None}
    if not given:
        return measured
    if any(isinstance(v, int) and v < 1 for v in given.values()):
        raise CliError("--pooler-max-client-conn and --pooler-pool-size must be at least 1")
    return replace(
        measured, pooler=replace(measured.pooler or PoolerLimits(mode="transaction"), **given)
    )


def _target(args: argparse.Namespace, measured: Measured) -> Target:
    if args.users is not None:
        return Target(users=args.users, ramp=args.ramp)
    if args.rate:
        return Target(rate=args.rate)
    if measured.burst_users is not None:  # a replay's own push
        return Target(users=measured.burst_users, ramp=measured.burst_ramp or 0.0)
    return Target()


def _preflight(measured: Measured, pools: int, goals: Goals, args: argparse.Namespace) -> Preflight:
    size = args.pool_size if args.pool_size is not None else measured.pool_size
    overflow = args.max_overflow if args.max_overflow is not None else measured.max_overflow
    timeout = args.pool_timeout if args.pool_timeout is not None else measured.pool_timeout
    if size is None or overflow is None or timeout is None:
        raise ValueError(
            "the pool's settings are not in the data: give --pool-size, --max-overflow and "
            "--pool-timeout"
        )
    gate: Callable[..., Preflight] = preflight
    if measured.pooler is not None:  # the pooler and the database judged with the pools
        gate = partial(stacksizing.preflight, db_max=args.database_max_connections)
    return gate(
        measured,
        pools,
        goals,
        users=args.push_users,
        ramp=args.push_ramp,
        requests_per_user=args.requests_per_user,
        settings=(size, overflow, timeout),
    )


def _measured_line(measured: Measured, pools: int) -> str:
    parts = [
        f"  measured {fig(measured.rate)} checkouts/s (busiest {fig(measured.peak_rate)}) "
        f"over {measured.pools} pool(s); hold mean {fig(measured.hold_mean)} s"
        + (f", p95 {fig(measured.hold_p95)} s" if measured.hold_p95 is not None else ""),
        f"; peak {fig(measured.peak_in_use)} in use per pool; {fig(measured.timeouts)} timeouts",
    ]
    if measured.pool_size is not None:
        parts.append(
            f"\n  running  pool_size {measured.pool_size}, max_overflow {measured.max_overflow}, "
            f"pool_timeout {measured.pool_timeout:g} s; planning for {pools} pools"
        )
    return "".join(parts)


def _print_advice(a: Advice) -> None:
    _print_working(a.working, stacked=a.pooler is not None)
    print(
        f"  recommend pool_size={a.pool_size} max_overflow={a.max_overflow} "
        f"pool_timeout={a.pool_timeout:g}  (per worker)"
    )
    if a.pooler is not None:
        print(
            f"  recommend the pooler's default_pool_size={a.pooler.default_pool_size} "
            f"max_client_conn={a.pooler.max_client_conn}"
        )
    if a.push is not None:
        print(
            f"  recommend sending the push at {fig(a.push.rate)} users/s ({a.push.batch} users "
            f"every {a.push.every:g} s), not at once: no size within the database's budget "
            "serves it at once within the timeout"
        )
    if a.waits and a.predicted is not None:
        q = a.predicted
        _print_waits(a.waits)
        print(
            f"  cost     {q.timeouts_high} timeouts and {q.late_high} requests waiting past "
            f"{q.timeout:g} s in any of {q.runs} simulated runs; the longest wait in all "
            f"{fig(q.longest_wait)} s"
        )
    elif a.predicted is not None:
        q = a.predicted
        print(
            f"  cost     the push waits median {fig(q.wait_p50)} s, p99 {fig(q.wait_p99)} s; "
            f"{q.timeouts_high} timeouts in any of {q.runs} simulated runs (no-wait size "
            f"{a.no_wait_servers if a.no_wait_servers is not None else 'none'}, smallest with "
            f"room {a.ride_out_servers})"
        )
    budget = (
        f" of the database's {a.database_budget}" if a.database_budget is not None else
        " (database limit unknown: --database-max-connections)"
    )  # fmt: skip
    if a.pooler is not None:
        print(f"  fleet    {a.pools} pools x {a.pool_size + a.max_overflow} = "
              f"{a.fleet_connections} client connections to the pooler; the database sees "
              f"its {a.pooler.default_pool_size} server connections{budget}")  # fmt: skip
    else:
        print(f"  fleet    {a.pools} pools x {a.pool_size + a.max_overflow} = "
              f"{a.fleet_connections} connections at most{budget}")  # fmt: skip
    for w in a.warnings:
        print(f"  WARNING  {w}")


def _print_working(lines: list[str], *, stacked: bool) -> None:
    """The working: the stack's, behind a pooler, or one pool's (per worker process)."""
    print("  working (the stack):" if stacked else "  working (per pool, i.e. per worker process):")
    for line in lines:
        print(f"    {line}")


def _print_waits(layers: dict[str, Waits]) -> None:
    for layer, w in layers.items():
        print(
            f"  waits    in the {layer}: median {fig(w.p50)} s, p99 {fig(w.p99)} s, "
            f"longest {fig(w.longest)} s"
        )


def _print_preflight(p: Preflight, users: int) -> None:
    q = p.prediction
    stacked = "pooler" in q.layers  # counts are the fleet's, waits at each layer
    _print_working(p.working, stacked=stacked)
    print(f"  safe sending rate {fig(p.safe_rate)} users/s; or {p.batches} batches of "
          f"{p.batch_users} users, one every {fig(p.batch_interval)} s")  # fmt: skip
    if stacked:
        _print_waits(q.layers)
    per = "in all" if stacked else "per pool"
    late = (
        f", and {fig(q.late)} more served only after waiting past it in the pooler "
        f"({q.late_high} at most)"
        if q.late_high
        else ""
    )
    waits = f"the longest wait about {fig(p.longest_wait)} s of the {q.timeout:g} s timeout"
    if p.verdict == TIMES_OUT:
        print(
            f"  push of {users} users: WOULD TIME OUT (about {fig(p.predicted_timeouts)} "
            f"requests, {q.timeouts_low}-{q.timeouts_high} {per} in {q.runs} runs{late}): send "
            "in batches instead"
        )
    elif p.verdict == AT_RISK:
        why = (
            f"timeouts in {q.runs} runs: up to {q.timeouts_high} {per}{late}"
            if q.may_time_out
            else f"{waits}, within {p.margin:.0%} of it"
        )
        print(f"  push of {users} users: AT RISK ({why}): send in batches, or --accept-risk")
    else:
        print(f"  push of {users} users: SAFE, no timeouts in {q.runs} runs; {waits}")
