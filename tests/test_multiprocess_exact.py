"""Multiprocess mode is as exact as the in-process one: what the workers wrote to their files,
read by the directory reader, equals what the workers counted themselves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pool_exporter.multiprocess.reader import WorkersCollector

from .support.procs import by_pid

APP = Path(__file__).parent / "apps" / "mp_contention.py"


def merged(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(WorkersCollector(str(directory)))
    text = generate_latest(registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_two_workers_contending_are_summed_exactly(tmp_path: Path) -> None:
    mp_dir = tmp_path / "mp"
    mp_dir.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)}
    workers = [
        subprocess.Popen(
            [sys.executable, str(APP), f"sqlite:///{tmp_path}/w{n}.db", "stay"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for n in range(2)
    ]
    tallies = []
    for w in workers:
        assert w.stdout is not None
        tallies.append(json.loads(w.stdout.readline()))
    try:
        samples = merged(mp_dir)
        ok = sum(t["ok"] for t in tallies)
        timeouts = sum(t["timeouts"] for t in tallies)
        assert ok > 0 and timeouts > 0
        assert samples[("sqlalchemy_pool_checkouts_total", (("pool", "mp"),))] == ok
        assert samples[("sqlalchemy_pool_checkout_timeouts_total", (("pool", "mp"),))] == timeouts
        wait_count = "sqlalchemy_pool_checkout_wait_seconds_count"
        assert samples[(wait_count, (("outcome", "success"), ("pool", "mp")))] == ok
        assert samples[(wait_count, (("outcome", "timeout"), ("pool", "mp")))] == timeouts
        pids = {w.pid for w in workers}
        listed = [(name, dict(labels), v) for (name, labels), v in samples.items()]
        for state in ("in_use", "idle"):
            per_worker = by_pid(listed, "sqlalchemy_pool_connections", state=state)
            assert set(per_worker) == pids
            assert all(v == (0 if state == "in_use" else 2) for v in per_worker.values())
        capacity = by_pid(listed, "sqlalchemy_pool_max_connections")
        assert capacity == dict.fromkeys(pids, 3.0)
    finally:
        for w in workers:
            assert w.stdin is not None
            w.stdin.close()
            w.wait(timeout=10)
