"""`pool-exporter replay`: the command, its flags and its one-line errors."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sqlalchemy import exc as sa_exc

from pool_exporter import redact
from pool_exporter.errors import CliError
from pool_exporter.incident.arguments import add_pool_arguments, add_push_arguments
from pool_exporter.incident.holds import HoldTime
from pool_exporter.incident.results import Result
from pool_exporter.incident.traffic import SHAPES, UNIFORM

from .runner import DatabaseUnavailable, replay
from .scenario import PoolSettings, Scenario
from .summary import summary


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="SQLAlchemy URL of the database to replay against (default: a temporary SQLite "
        "file); the password is never printed",
    )
    add_pool_arguments(parser)
    add_push_arguments(parser)
    parser.add_argument("--ramp-shape", choices=SHAPES, default=UNIFORM)
    parser.add_argument(
        "--hold-median", type=float, default=0.1, help="median hold time, seconds (0.1)"
    )
    parser.add_argument(
        "--hold-p95",
        type=float,
        default=None,
        help="95th percentile hold time (default 4x the median; equal to it: fixed)",
    )
    parser.add_argument(
        "--background-rate", type=float, default=0.0, help="steady requests per second (0)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=0.0,
        help="seconds of steady traffic; the run ends when it and the push are done (0)",
    )
    parser.add_argument(
        "--push-at", type=float, default=0.0, help="seconds into the run the push starts (0)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--hold-in-transaction",
        action="store_true",
        help="run a query before the hold, so each request holds an open transaction (what a "
        "pooler in transaction mode pins a server connection for)",
    )
    parser.add_argument(
        "--through-pooler",
        action="store_true",
        help="--database-url is a pooler in transaction mode (PgBouncer): implies "
        "--hold-in-transaction, and reports where the time went in three layers, the wait for "
        "the app pool's connection, the wait in the pooler (the transaction's first statement, "
        "one round trip included) and the database's time (the rest of the hold); without it, "
        "two: the pool's and the database's",
    )
    parser.add_argument("--pool-name", default="replay", help="the `pool` label (replay)")
    parser.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")


def scenario_from(args: argparse.Namespace) -> tuple[Scenario, PoolSettings]:
    try:
        hold = HoldTime(args.hold_median, args.hold_p95 or 4 * args.hold_median)
        scenario = Scenario(
            users=args.users,
            ramp=args.ramp,
            ramp_shape=args.ramp_shape,
            hold=hold,
            background_rate=args.background_rate,
            duration=args.duration,
            push_at=args.push_at,
            seed=args.seed,
            hold_in_transaction=args.hold_in_transaction or args.through_pooler,
            through_pooler=args.through_pooler,
        )
        settings = PoolSettings(args.pool_size, args.max_overflow, args.pool_timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    return scenario, settings


def write_json(result: Result, target: str) -> None:
    text = json.dumps(result.to_json(), indent=1) + "\n"
    if target == "-":
        sys.stdout.write(text)
    else:
        Path(target).write_text(text)


def run(args: argparse.Namespace) -> int:
    scenario, settings = scenario_from(args)
    out = sys.stderr if args.json == "-" else sys.stdout
    try:
        result = replay(
            scenario, settings, database_url=args.database_url, pool_name=args.pool_name
        )
    except (sa_exc.NoSuchModuleError, ModuleNotFoundError) as exc:
        raise CliError(f"no driver for --database-url: {exc}") from None
    except redact.MalformedUrl as exc:
        raise CliError(f"--database-url is not a database URL: {exc}") from None
    except sa_exc.ArgumentError as exc:
        raise CliError(f"--database-url is not a database URL: {redact.text(str(exc))}") from None
    except DatabaseUnavailable as exc:
        raise CliError(str(exc)) from None
    for line in summary(result):
        print(line, file=out)
    if result.requests and result.errors == result.requests:
        kinds = ", ".join(f"{k} x{v}" for k, v in result.error_types.items())
        raise CliError(f"every request failed ({kinds}); is the database reachable?")
    if args.json:
        write_json(result, args.json)
    return 0
