"""A process that writes pool metrics into PROMETHEUS_MULTIPROC_DIR and stays alive.

    pool_writer.py [--pools N] [--checkouts K] [--fork [os|c]] [--pid PID]
                   [--reuse-pid-of STATS_FILE] [--plant symlink|fifo] [--uninstrument-and-fork]

Instruments N SQLite engines, checks each out K times, prints its pid (and, with --fork, the
pid of a forked child that does the same) and waits until stdin closes or it is killed.
`--fork c` forks with libc's fork(), past Python's fork hooks (as uWSGI does), and the child
resets itself as the documentation asks. With --pid, the process takes PID as its identity
(pool_exporter.fork.use_process_identifier): a test chooses the pids it needs, digit counts
included, and prints that one.
With --reuse-pid-of, it first plays a process the kernel gave a dead worker's pid: the dead
worker's stats file and lock file are renamed to this process's pid. With --plant, a symlink
(to `<dir>/target`) or a FIFO is first planted at this process's lock file name. With
--uninstrument-and-fork, the pools are uninstrumented after the checkouts and a child is
forked that instruments nothing (it prints `child PID` and waits as well).
"""

import argparse
import ctypes
import os
import sys

import sqlalchemy as sa

from pool_exporter import fork, instrument


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pools", type=int, default=1)
    parser.add_argument("--checkouts", type=int, default=1)
    parser.add_argument("--fork", nargs="?", const="os", choices=["os", "c"])
    parser.add_argument("--pid", type=int)
    parser.add_argument("--reuse-pid-of", default="")
    parser.add_argument("--plant", choices=["symlink", "fifo"])
    parser.add_argument("--uninstrument-and-fork", action="store_true")
    args = parser.parse_args()
    if args.pid is not None:
        fork.use_process_identifier(lambda: args.pid)
    if args.reuse_pid_of:
        take_pid_of(args.reuse_pid_of)
    if args.plant:
        plant(args.plant)
    engines = [sa.create_engine("sqlite://") for _ in range(args.pools)]
    handles = [instrument(engine, name=f"pool{n}") for n, engine in enumerate(engines)]
    if args.uninstrument_and_fork:
        work(engines, args.checkouts)
        for handle in handles:
            handle.uninstrument()
        if os.fork() == 0:
            say(f"child {os.getpid()}")
            sys.stdin.read()
            os._exit(0)
        say(f"parent {os.getpid()}")
        sys.stdin.read()
        return
    if args.fork and forked(args.fork):
        work(engines, args.checkouts)
        say(f"child {os.getpid()}")
        sys.stdin.read()
        os._exit(0)
    work(engines, args.checkouts)
    say(f"parent {fork.this_process()}")
    sys.stdin.read()


def forked(how: str) -> bool:
    """Fork; True in the child."""
    if how == "os":
        return os.fork() == 0
    # PyDLL keeps the GIL held across the call, so the child's only thread has it.
    if ctypes.PyDLL(None).fork() != 0:
        return False
    fork.reset_as_forked_child()
    return True


def take_pid_of(stats_file: str) -> None:
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    old, rest = stats_file.split("_", 3)[2:]  # pool_exporter_<pid>_<token>_<seq>.stats
    me = os.getpid()
    os.rename(
        os.path.join(directory, stats_file), os.path.join(directory, f"pool_exporter_{me}_{rest}")
    )
    lock = os.path.join(directory, f"pool_exporter_{old}.lock")
    if os.path.exists(lock):
        os.rename(lock, os.path.join(directory, f"pool_exporter_{me}.lock"))


def plant(kind: str) -> None:
    directory = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    lock = os.path.join(directory, f"pool_exporter_{os.getpid()}.lock")
    if kind == "fifo":
        os.mkfifo(lock)
    else:
        os.symlink(os.path.join(directory, "target"), lock)


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
