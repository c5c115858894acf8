"""The checkouts still out (holders.CheckoutTracker), driven at chosen times on a real pool.

The watcher thread calls `check_long(now)`; calling it here with a `now` an hour ahead finds a
checkout long without sleeping, and a marker set an hour back makes one that is long when it
comes back, before any watcher looked.
"""

from __future__ import annotations

import logging
from time import perf_counter

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import pool_exporter
from tests.conftest import value

HOUR = 3600.0
LONG = "sqlalchemy_pool_long_checkouts_total"


def messages(caplog: pytest.LogCaptureFixture, level: int, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pool_exporter" and r.levelno == level and text in r.getMessage()
    ]


def test_a_long_checkout_is_counted_once_whether_the_watcher_or_the_checkin_finds_it_first(
    registry: CollectorRegistry, sqlite_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pool_exporter")
    engine = sa.create_engine(sqlite_url, pool_size=2)
    handle = pool_exporter.instrument(
        engine, name="t", registry=registry, long_checkout_threshold=HOUR
    )
    tracker = handle.tracker

    # the watcher finds it first: due in an hour, then found an hour later, and only once
    seen_first = engine.connect()
    due = tracker.check_long(perf_counter())
    assert due is not None and due > perf_counter() + HOUR - 60
    assert value(registry, LONG, pool="t") == 0
    assert tracker.check_long(perf_counter() + HOUR + 1) is None
    assert tracker.check_long(perf_counter() + HOUR + 2) is None
    assert value(registry, LONG, pool="t") == 1
    [out] = handle.checkouts()
    assert out.long
    seen_first.close()
    assert value(registry, LONG, pool="t") == 1

    # the checkin finds it first: it began an hour ago and no watcher looked
    back_first = engine.connect()
    [record] = tracker.out
    record.record_info[tracker.key] -= HOUR + 1
    back_first.close()
    assert value(registry, LONG, pool="t") == 2
    assert tracker.check_long(perf_counter() + 2 * HOUR) is None
    assert value(registry, LONG, pool="t") == 2

    warnings = messages(caplog, logging.WARNING, "checked out for")
    assert len(warnings) == 2
    assert all("test_a_long_checkout_is_counted_once" in w for w in warnings)
    assert len(messages(caplog, logging.INFO, "came back after")) == 2
    engine.dispose()


def test_a_failure_while_looking_for_long_checkouts_is_counted_and_the_next_look_works(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=2)
    handle = pool_exporter.instrument(
        engine, name="t", registry=registry, long_checkout_threshold=HOUR
    )
    tracker = handle.tracker
    with engine.connect():
        # a clock reading that cannot be compared: only this call fails, not the watcher's
        assert tracker.check_long(None) is None  # type: ignore[arg-type]
        assert tracker.check_long(perf_counter() + HOUR + 1) is None
        assert value(registry, LONG, pool="t") == 1
    assert value(registry, "pool_exporter_hook_errors_total", pool="t", hook="long_checkout") == 1
    engine.dispose()
