"""mark_event(): counted and time-stamped per event name, per registry and across workers."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from pool_exporter import metrics as m
from pool_exporter.events import mark_event

from .support.exposition import scrape, value

EVENTS = m.EVENTS.sample
LAST = m.EVENT_LAST_TIMESTAMP.sample


def test_mark_event_counts_and_stamps_the_time(registry: CollectorRegistry) -> None:
    before = time.time()
    mark_event("push", registry=registry)
    mark_event("push", registry=registry)
    mark_event("deploy", registry=registry, at=1_700_000_000.5)
    assert value(registry, EVENTS, event="push") == 2
    assert value(registry, EVENTS, event="deploy") == 1
    assert before <= value(registry, LAST, event="push") <= time.time()
    assert value(registry, LAST, event="deploy") == 1_700_000_000.5


def test_registries_are_independent(registry: CollectorRegistry) -> None:
    other = CollectorRegistry()
    mark_event("campaign", registry=registry)
    assert value(registry, EVENTS, event="campaign") == 1
    assert not [k for k in scrape(other) if k[0] == EVENTS]


@pytest.mark.parametrize("bad", ["", None, 3])
def test_an_event_needs_a_name(registry: CollectorRegistry, bad: object) -> None:
    with pytest.raises(ValueError, match="event name"):
        mark_event(bad, registry=registry)  # type: ignore[arg-type]


def test_multiprocess_workers_sum_counts_and_keep_the_latest_time(tmp_path: Path) -> None:
    # The mode is chosen at import from the environment, so each worker is its own process.
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for at in (100.0, 300.0, 200.0):
        code = f"from pool_exporter.events import mark_event; mark_event('push', at={at})"
        subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=str(tmp_path))
    samples = scrape(merged)
    assert samples[(EVENTS, (("event", "push"),))] == 3
    # One series, the latest time any worker marked, not the last worker's.
    assert [(k, v) for k, v in samples.items() if k[0] == LAST] == [
        ((LAST, (("event", "push"),)), 300.0)
    ]
