"""How late the watcher reports a long checkout: WARNING time minus (checkout + threshold).

Holds connections on a SQLite-file pool past a 0.2 s threshold, one after another and from
several threads at once, and reports the lag of each WARNING. Run it on the machine whose
figure you want (a busy interpreter or machine delays the watcher thread).

    .venv/bin/python bench/long_checkout_latency.py [--holds 20] [--threads 4]
"""

from __future__ import annotations

import argparse
import atexit
import logging
import shutil
import statistics
import tempfile
import threading
import time

import sqlalchemy as sa

import pool_exporter

THRESHOLD = 0.2


class Times(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.warned: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "checked out for" in record.getMessage():
            self.warned.append(record.created)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    times = Times()
    logger = logging.getLogger("pool_exporter")
    logger.addHandler(times)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    workdir = tempfile.mkdtemp(prefix="pool-exporter-latency-")
    atexit.register(shutil.rmtree, workdir, True)  # the SQLite file and stats files
    engine = sa.create_engine(f"sqlite:///{workdir}/l.db", pool_size=args.threads)
    pool_exporter.instrument(engine, name="latency", long_checkout_threshold=THRESHOLD)
    due: list[float] = []
    lock = threading.Lock()

    def hold() -> None:
        for _ in range(args.holds):
            with engine.connect():
                with lock:
                    due.append(time.time() + THRESHOLD)
                time.sleep(THRESHOLD + 0.1)

    threads = [threading.Thread(target=hold) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    lags = [(w - d) * 1000 for w, d in zip(sorted(times.warned), sorted(due), strict=True)]
    print(f"{len(lags)} long checkouts from {args.threads} threads, threshold {THRESHOLD} s")
    print(f"report lag ms: median {statistics.median(lags):.1f}, max {max(lags):.1f}, "
          f"min {min(lags):.1f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
