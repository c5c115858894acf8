"""A process that writes pool metrics into PROMETHEUS_MULTIPROC_DIR and stays alive.

    pool_writer.py [--pools N] [--checkouts K] [--fork]

Instruments N SQLite engines, checks each out K times, prints its pid (and, with --fork, the
pid of a forked child that does the same) and waits until stdin closes or it is killed.
"""

import argparse
import os
import sys

import sqlalchemy as sa

from pool_exporter import instrument


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, default=1)
    parser.add_argument("--checkouts", type=int, default=1)
    parser.add_argument("--fork", action="store_true")
    args = parser.parse_args()
    engines = [sa.create_engine("sqlite://") for _ in range(args.pools)]
    for n, engine in enumerate(engines):
        instrument(engine, name=f"pool{n}")
    if args.fork and os.fork() == 0:
        work(engines, args.checkouts)
        say(f"child {os.getpid()}")
        sys.stdin.read()
        os._exit(0)
    work(engines, args.checkouts)
    say(f"parent {os.getpid()}")
    sys.stdin.read()


def say(line: str) -> None:
    # One write(2) per line: parent and child share the pipe, and print() may split a line.
    os.write(1, f"{line}\n".encode())


def work(engines: list[sa.Engine], checkouts: int) -> None:
    for engine in engines:
        for _ in range(checkouts):
            with engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")


if __name__ == "__main__":
    main()
