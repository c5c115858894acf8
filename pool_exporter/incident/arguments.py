"""The command-line arguments `replay`, `demo` and `advise` share, each defined once."""

from __future__ import annotations

import argparse

# SQLAlchemy's QueuePool defaults, the incident's settings
POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT = 5, 10, 30.0
# the incident's push
USERS, RAMP = 2000, 3.0


def add_pool_arguments(
    parser: argparse.ArgumentParser, *, in_force: bool = False, timeout_help: str = ""
) -> None:
    """--pool-size, --max-overflow, --pool-timeout: the pool to run (SQLAlchemy's defaults),
    or with `in_force` the settings running now (default: as measured)."""
    if in_force:
        defaults: tuple[int | None, int | None, float | None] = (None, None, None)
        shown = ["with --preflight, the one in force; default: as measured"] * 3
    else:
        defaults = (POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT)
        shown = [str(POOL_SIZE), str(MAX_OVERFLOW), f"{POOL_TIMEOUT:g}{timeout_help}"]
    parser.add_argument(
        "--pool-size", type=int, default=defaults[0], help=f"QueuePool pool_size ({shown[0]})"
    )
    parser.add_argument(
        "--max-overflow", type=int, default=defaults[1], help=f"max_overflow ({shown[1]})"
    )
    parser.add_argument(
        "--pool-timeout", type=float, default=defaults[2],
        help=f"pool_timeout in seconds ({shown[2]})",
    )  # fmt: skip


def add_push_arguments(parser: argparse.ArgumentParser) -> None:
    """--users, --ramp: the push to run (the incident's: 2,000 users over 3 s)."""
    parser.add_argument("--users", type=int, default=USERS, help=f"users in the push ({USERS})")
    parser.add_argument(
        "--ramp", type=float, default=RAMP, help=f"seconds over which they arrive ({RAMP:g})"
    )
