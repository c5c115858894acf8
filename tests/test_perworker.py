"""A live stats file read as the scrape reads it (its slots as one list): the same numbers
layout.read_file gives, and never half of a capacity being stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pool_exporter.multiprocess import layout
from pool_exporter.multiprocess.store import MultiprocessPoolStats
from pool_exporter.stats import Capacity


def test_the_slots_a_scrape_reads_hold_what_read_file_reads(tmp_path: Path) -> None:
    stats = MultiprocessPoolStats("p", {}, str(tmp_path))
    assert stats.path is not None
    stats.configure(Capacity(5, 10, 30.0))
    for wait in (0.001, 0.2, 3.0):
        stats.enter()
        stats.checked_out(wait, True, False)
    stats.checked_in(0.5, True)
    stats.invalidated(True)
    fd = os.open(stats.path, os.O_RDONLY)
    try:
        slots = layout.read_values(fd)
        reference, active = layout.read_file(fd)
    finally:
        os.close(fd)
    assert layout.capacity(slots) == reference.capacity == Capacity(5, 10, 30.0)
    assert bool(slots[layout.ACTIVE]) is active is True
    summed = layout.from_values(slots)
    for name in ("checkouts", "invalidations", "hook_errors"):
        assert getattr(summed, name) == getattr(reference, name)
    for name in ("wait", "hold"):
        assert getattr(summed, name).counts == getattr(reference, name).counts
        assert getattr(summed, name).sum == getattr(reference, name).sum
    assert slots[layout.OFFSETS["in_use"]] == reference.in_use == 2


# Another process reading the file as a scrape does, as fast as it can, for a few seconds.
WATCH = """
import json, os, sys, time
from pool_exporter.multiprocess import layout
fd = os.open(sys.argv[1], os.O_RDONLY)
seen, reads, end = set(), 0, time.monotonic() + 3
print("ready", flush=True)
while time.monotonic() < end:
    cap = layout.capacity(layout.read_values(fd))
    seen.add(None if cap is None else (cap.size, cap.max_overflow, cap.timeout))
    reads += 1
print(json.dumps({"reads": reads, "seen": sorted(seen, key=str)}))
"""


def test_a_scrape_never_reads_half_of_a_new_capacity(tmp_path: Path) -> None:
    stats = MultiprocessPoolStats("p", {}, str(tmp_path))
    assert stats.path is not None
    either = (Capacity(5, 10, 30.0), Capacity(1, 2, 3.0))
    reader = subprocess.Popen(
        [sys.executable, "-c", WATCH, stats.path], stdout=subprocess.PIPE, text=True
    )
    assert reader.stdout is not None
    assert reader.stdout.readline() == "ready\n"
    while reader.poll() is None:  # switching as fast as this process can
        for capacity in either:
            stats.configure(capacity)
    found = json.loads(reader.stdout.read())
    assert found["reads"] > 1000
    whole = {(c.size, c.max_overflow, c.timeout) for c in either}
    assert {tuple(c) for c in found["seen"] if c is not None} == whole
