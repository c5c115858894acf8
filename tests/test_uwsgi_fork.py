"""A child forked past Python's fork hooks (as uWSGI forks its workers) is reset by
`instrument()`'s pid check, once; a child of os.fork() is not reset a second time. uWSGI's own
post-fork hook is tested with uWSGI itself, in tests/test_servers.py."""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import pool_exporter
from pool_exporter.instrument import PoolInstrumentation

from .support.forking import in_child

# libc's fork() called directly: Python's os.register_at_fork hooks do not run. PyDLL keeps the
# GIL held across the call, so the child's only thread has it.
C_FORK = ctypes.PyDLL(None).fork
# A lock another thread holds at such a fork stays held in the child: these run in pytest's
# own process after the parallel run, not in an xdist worker (whose execnet thread is busy).
pytestmark = pytest.mark.serial


@pytest.fixture
def checked_out(registry: CollectorRegistry, sqlite_url: str) -> Iterator[PoolInstrumentation]:
    """An instrumented SQLite-file engine after 3 checkouts in this process."""
    engine = sa.create_engine(sqlite_url, pool_size=2)
    handle = pool_exporter.instrument(engine, registry=registry, dispose_on_fork=True)
    for _ in range(3):
        engine.connect().close()
    yield handle
    engine.dispose()


def _instrument_another(registry: CollectorRegistry, directory: Path) -> sa.Engine:
    other = sa.create_engine(f"sqlite:///{directory}/other.db")
    pool_exporter.instrument(other, name="other", registry=registry)
    return other


def test_instrument_in_a_child_forked_from_c_resets_the_parents_numbers_first(
    checked_out: PoolInstrumentation, registry: CollectorRegistry, tmp_path: Path
) -> None:
    handle, engine = checked_out, checked_out.engine
    parent_pool = engine.pool

    def child() -> object:
        inherited = handle.stats.checkouts
        # Instrumenting another engine (or this one again) is where the child is noticed.
        other = _instrument_another(registry, tmp_path)
        again = pool_exporter.instrument(engine)
        # reset as any forked child, dispose_on_fork included: a pool of its own
        after = (again is handle, handle.stats.checkouts, engine.pool is parent_pool)
        engine.connect().close()
        pool_exporter.instrument(other)  # the same process now: nothing is reset again
        return inherited, after, handle.stats.checkouts, os.getpid()

    inherited, after, checkouts, pid = in_child(child, fork=C_FORK)
    assert inherited == 3  # no fork hook ran: until noticed, the child counts as its parent
    assert after == (True, 0, False)
    assert checkouts == 1
    assert pid != os.getpid()
    assert handle.stats.checkouts == 3  # the parent's own numbers are untouched


def test_a_child_of_os_fork_is_reset_once_by_pythons_hook_only(
    checked_out: PoolInstrumentation, registry: CollectorRegistry, tmp_path: Path
) -> None:
    handle = checked_out

    def child() -> object:
        reset = handle.stats.checkouts
        handle.engine.connect().close()
        _instrument_another(registry, tmp_path)
        return reset, handle.stats.checkouts

    assert in_child(child) == (0, 1)
