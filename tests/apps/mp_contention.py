"""Run in a process with PROMETHEUS_MULTIPROC_DIR set: threads contend on a tiny instrumented
pool; prints what the threads counted themselves as JSON."""

import json
import sys
import threading
import time

import sqlalchemy as sa

import pool_exporter

url = sys.argv[1]
engine = sa.create_engine(url, pool_size=2, max_overflow=1, pool_timeout=0.3)
pool_exporter.instrument(engine, name="mp")
tally = {"ok": 0, "timeouts": 0}
lock = threading.Lock()


def user(seed: int) -> None:
    for i in range(10):
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("select 1")
                time.sleep(0.02 + 0.1 * ((seed * 7 + i * 3) % 10) / 10)
            outcome = "ok"
        except sa.exc.TimeoutError:
            outcome = "timeouts"
        with lock:
            tally[outcome] += 1


threads = [threading.Thread(target=user, args=(n,)) for n in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(tally))
sys.stdout.flush()
if len(sys.argv) > 2:  # stay alive, holding the liveness lock, until told to go
    sys.stdin.read()
