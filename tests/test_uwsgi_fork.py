"""A child forked past Python's fork hooks (as uWSGI forks its workers) is reset by
`instrument()`'s pid check, once; a child of os.fork() is not reset a second time. uWSGI's own
post-fork hook is tested with uWSGI itself, in tests/test_servers.py."""

from __future__ import annotations

import ctypes
import os

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import pool_exporter

from .support.forking import in_child

# libc's fork() called directly: Python's os.register_at_fork hooks do not run. PyDLL keeps the
# GIL held across the call, so the child's only thread has it.
C_FORK = ctypes.PyDLL(None).fork


def _engine_with_checkouts(url: str, registry: CollectorRegistry, name: str) -> sa.Engine:
    engine = sa.create_engine(url, pool_size=2)
    pool_exporter.instrument(engine, name=name, registry=registry, dispose_on_fork=True)
    for _ in range(3):
        engine.connect().close()
    return engine


def test_instrument_in_a_child_forked_from_c_resets_the_parents_numbers_first(
    registry: CollectorRegistry, sqlite_url: str, tmp_path: object
) -> None:
    engine = _engine_with_checkouts(sqlite_url, registry, "cfork")
    handle = pool_exporter.instrument(engine)

    def child() -> object:
        inherited = handle.stats.checkouts
        # Instrumenting another engine (or this one again) is where the child is noticed.
        other = sa.create_engine(f"sqlite:///{tmp_path}/other.db")
        pool_exporter.instrument(other, name="other", registry=registry)
        again = pool_exporter.instrument(engine)
        after = (again is handle, handle.stats.checkouts, engine.pool is not None)
        engine.connect().close()
        pool_exporter.instrument(other)  # the same process now: nothing is reset again
        return inherited, after, handle.stats.checkouts, os.getpid()

    inherited, after, checkouts, pid = in_child(child, fork=C_FORK)
    assert inherited == 3  # no fork hook ran: until noticed, the child counts as its parent
    assert after == (True, 0, True)
    assert checkouts == 1
    assert pid != os.getpid()
    assert handle.stats.checkouts == 3  # the parent's own numbers are untouched
    engine.dispose()


def test_a_child_of_os_fork_is_reset_once_by_pythons_hook_only(
    registry: CollectorRegistry, sqlite_url: str, tmp_path: object
) -> None:
    engine = _engine_with_checkouts(sqlite_url, registry, "pyfork")
    handle = pool_exporter.instrument(engine)

    def child() -> object:
        reset = handle.stats.checkouts
        engine.connect().close()
        other = sa.create_engine(f"sqlite:///{tmp_path}/other.db")
        pool_exporter.instrument(other, name="other", registry=registry)
        return reset, handle.stats.checkouts

    assert in_child(child) == (0, 1)
    engine.dispose()
