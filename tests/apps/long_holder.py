"""A process in multiprocess mode that holds one connection past its long-checkout threshold.

    long_holder.py DIRECTORY [--fork]

Instruments a SQLite engine with long_checkout_threshold=0.5 (with --fork, forks first, so a
child that inherited the instrumentation holds one too), checks a connection out in
`hold_in_worker`, prints its role and pid, and logs to DIRECTORY/log-PID.txt. It checks the
connection in once DIRECTORY/release exists (then writes DIRECTORY/released-PID) and exits
when stdin closes.
"""

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import sqlalchemy as sa

from pool_exporter import instrument


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory", type=Path)
    parser.add_argument("--fork", action="store_true")
    args = parser.parse_args()
    engine = sa.create_engine(f"sqlite:///{args.directory}/app.db", pool_size=2)
    instrument(engine, name="holder", long_checkout_threshold=0.5)
    role = "parent"
    if args.fork and os.fork() == 0:
        role = "child"
    logging.basicConfig(
        filename=args.directory / f"log-{os.getpid()}.txt", level=logging.INFO, force=True
    )
    hold_in_worker(engine, args.directory, role)
    sys.stdin.read()
    if role == "child":
        os._exit(0)


def hold_in_worker(engine: sa.Engine, directory: Path, role: str) -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("select 1")
        # One write(2) per line: parent and child share the pipe.
        os.write(1, f"{role} {os.getpid()}\n".encode())
        while not (directory / "release").exists():
            time.sleep(0.05)
    (directory / f"released-{os.getpid()}").touch()


if __name__ == "__main__":
    main()
