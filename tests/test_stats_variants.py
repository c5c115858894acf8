"""Every variant of PoolStats (locked, multiprocess, both) is made from the one list of
updates: none of them can leave an update out."""

from __future__ import annotations

import inspect
import threading
from pathlib import Path
from typing import Any

import pytest

from pool_exporter.multiprocess.store import LockedMultiprocessPoolStats, MultiprocessPoolStats
from pool_exporter.stats import (
    OTHERS,
    TIMEOUT,
    UNDER_LOCK,
    UPDATES,
    Capacity,
    LockedPoolStats,
    PoolStats,
)

from .support.workers import read_stats_file, same_fields

# One call of each update, each changing at least one stored value of a fresh PoolStats.
CALLS: dict[str, tuple[Any, ...]] = {
    "reset": (),
    "configure": (Capacity(5, 10, 30.0), 3600.0),
    "isolation_known": (3,),
    "enter": (),
    "checked_out": (0.003, True, False),
    "waited_out": (0.2, True),
    "failed": (TIMEOUT, 0.3),
    "checked_in": (0.004, True),
    "detached": (0.5,),
    "opening_started": (),
    "opening_ended": (),
    "connected": (0.02,),
    "closed": (True, "overflow"),
    "invalidated": (True,),
    "hook_failed": ("checkin",),
    "oldest_changed": (1_700_000_000.5,),
    "held_long": (),
    "collected": (),
    "retire": (),
}


def test_every_public_method_of_pool_stats_is_listed_as_an_update_or_not() -> None:
    public = {
        name
        for name, member in inspect.getmembers(PoolStats, inspect.isfunction)
        if not name.startswith("_")
    }
    assert public == set(UPDATES) | set(OTHERS)
    assert set(CALLS) == set(UPDATES)


def locked_variants(tmp_path: Path) -> list[Any]:
    return [LockedPoolStats(), LockedMultiprocessPoolStats("p", {}, str(tmp_path))]


@pytest.mark.parametrize("name", UNDER_LOCK)
def test_a_locked_variant_runs_every_update_and_its_snapshot_under_its_lock(
    tmp_path: Path, name: str
) -> None:
    for stats in locked_variants(tmp_path):
        done = threading.Event()

        def update(stats: Any = stats, done: threading.Event = done) -> None:
            getattr(stats, name)(*CALLS.get(name, ()))
            done.set()

        call = threading.Thread(target=update)
        with stats._lock:  # another thread's update in progress
            call.start()
            assert not done.wait(0.05), f"{type(stats).__name__}.{name} ran without the lock"
        assert done.wait(5), f"{type(stats).__name__}.{name} did not finish"
        call.join()


@pytest.mark.parametrize("kind", [MultiprocessPoolStats, LockedMultiprocessPoolStats])
@pytest.mark.parametrize("name", UPDATES)
def test_a_multiprocess_variant_stores_what_each_update_changed(
    tmp_path: Path, kind: type[MultiprocessPoolStats], name: str
) -> None:
    stats = kind("p", {}, str(tmp_path))
    getattr(stats, name)(*CALLS[name])
    assert stats.path is not None
    _, stored, active = read_stats_file(stats.path)
    same_fields(stored, stats)
    assert (stored.capacity, active) == (stats.capacity, stats.active)


@pytest.mark.parametrize("kind", [PoolStats, LockedPoolStats])
def test_a_snapshot_is_a_copy_of_every_value(kind: type[PoolStats]) -> None:
    stats = kind()
    for name in UPDATES:
        getattr(stats, name)(*CALLS[name])
    copy = stats.snapshot()
    same_fields(copy, stats)
    assert copy.capacity == stats.capacity and copy.overflow == stats.overflow
    assert copy.recycle == stats.recycle
    # Later updates change the pool's stats, not the copy (no list or dict is shared). CALLS
    # checks out twice (checked_out, waited_out) and fails a hook once.
    stats.checked_out(0.001, True, False)
    stats.hook_failed("checkin")
    stats.closed(False, "dispose")
    stats.failed(TIMEOUT, 0.2)
    assert (copy.checkouts, copy.hook_errors["checkin"], sum(copy.wait.counts)) == (2, 1, 2)
    assert (stats.checkouts, stats.hook_errors["checkin"], sum(stats.wait.counts)) == (3, 2, 3)
    assert (copy.close_reasons["dispose"], sum(copy.wait_timeout.counts)) == (0, 1)
    assert (stats.close_reasons["dispose"], sum(stats.wait_timeout.counts)) == (1, 2)
