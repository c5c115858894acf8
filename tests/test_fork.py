"""The fork sequence: every forked child is reset exactly once, whoever forked it (Python's
os.fork(), libc's fork() past Python's hooks, a child of a child), and lets its parent's
liveness lock and worker slot go before its handles write files of their own."""

from __future__ import annotations

import ctypes
import os
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import pool_exporter
from pool_exporter import fork
from pool_exporter.instrument import PoolInstrumentation
from pool_exporter.multiprocess import header, layout, liveness, slots

from .support.forking import in_child
from .support.procs import Procs, procs
from .support.workers import kill9, stats_files

__all__ = ["procs"]

# libc's fork() called directly, as uWSGI forks its workers: Python's os.register_at_fork
# handlers do not run. PyDLL keeps the GIL held across the call, so the child's only thread
# has it.
C_FORK = ctypes.PyDLL(None).fork

# libc's fork() in an xdist worker copies a lock its own thread may hold: run in one process.
pytestmark = pytest.mark.serial

CHECKOUTS = "sqlalchemy_pool_checkouts_total"


@pytest.fixture
def first(registry: CollectorRegistry, sqlite_url: str) -> Iterator[PoolInstrumentation]:
    """Pool "first", instrumented, after 3 checkouts in this process."""
    engine = sa.create_engine(sqlite_url, pool_size=2)
    handle = pool_exporter.instrument(engine, name="first", registry=registry)
    for _ in range(3):
        engine.connect().close()
    yield handle
    engine.dispose()


def checkouts(registry: CollectorRegistry, pool: str = "first") -> float | None:
    return registry.get_sample_value(CHECKOUTS, {"pool": pool})


def check_out(handle: PoolInstrumentation, times: int) -> None:
    for _ in range(times):
        handle.engine.connect().close()


def instrument_second(registry: CollectorRegistry, directory: Path) -> sa.Engine:
    second = sa.create_engine(f"sqlite:///{directory}/second-{os.getpid()}.db")
    pool_exporter.instrument(second, name=f"second-{os.getpid()}", registry=registry)
    return second


def test_a_child_forked_from_c_that_resets_itself_is_not_reset_again_by_instrument(
    first: PoolInstrumentation, registry: CollectorRegistry, tmp_path: Path
) -> None:
    def child() -> object:
        fork.reset_as_forked_child()  # as the documentation asks of a child forked from C
        check_out(first, 2)
        instrument_second(registry, tmp_path)
        check_out(first, 1)
        return checkouts(registry)

    assert in_child(child, fork=C_FORK) == 3
    assert checkouts(registry) == 3  # the parent's own


def test_a_child_forked_from_c_that_resets_itself_is_not_reset_again_by_uwsgis_hook(
    first: PoolInstrumentation, registry: CollectorRegistry, tmp_path: Path
) -> None:
    def child() -> object:
        # uWSGI's module as the workers see it; uWSGI calls its post_fork_hook in each.
        uwsgi = sys.modules["uwsgi"] = types.ModuleType("uwsgi")
        fork.reset_as_forked_child()
        check_out(first, 2)
        instrument_second(registry, tmp_path)  # puts the reset into uwsgi.post_fork_hook
        uwsgi.post_fork_hook()
        check_out(first, 1)
        return checkouts(registry)

    assert in_child(child, fork=C_FORK) == 3


def test_a_child_forked_from_c_is_reset_once_by_instrument_when_it_did_not_reset_itself(
    first: PoolInstrumentation, registry: CollectorRegistry, tmp_path: Path
) -> None:
    def child() -> object:
        inherited = checkouts(registry)
        second = instrument_second(registry, tmp_path)  # resets this child first
        check_out(first, 2)
        pool_exporter.instrument(second)  # its handle again, and nothing reset
        pool_exporter.instrument(first.engine)
        return inherited, checkouts(registry)

    assert in_child(child, fork=C_FORK) == (3, 2)


def test_a_child_of_os_fork_is_reset_by_pythons_hook_and_never_again(
    first: PoolInstrumentation, registry: CollectorRegistry, tmp_path: Path
) -> None:
    def child() -> object:
        reset = checkouts(registry)
        check_out(first, 2)
        instrument_second(registry, tmp_path)
        fork.reset_if_forked()  # what instrument() and uWSGI's hook call: nothing to do
        check_out(first, 1)
        return reset, checkouts(registry)

    assert in_child(child) == (0, 3)


@pytest.mark.parametrize(
    ("outer", "inner"),
    [(os.fork, os.fork), (os.fork, C_FORK), (C_FORK, os.fork), (C_FORK, C_FORK)],
    ids=["os-os", "os-c", "c-os", "c-c"],
)
def test_a_child_of_a_child_is_reset_once_and_counts_its_own(
    first: PoolInstrumentation,
    registry: CollectorRegistry,
    tmp_path: Path,
    outer: object,
    inner: object,
) -> None:
    def grandchild() -> object:
        if inner is C_FORK:
            fork.reset_as_forked_child()
        reset = checkouts(registry)
        check_out(first, 1)
        instrument_second(registry, tmp_path)
        check_out(first, 1)
        return reset, checkouts(registry)

    def child() -> object:
        if outer is C_FORK:
            fork.reset_as_forked_child()
        check_out(first, 5)
        below = in_child(grandchild, fork=inner)  # type: ignore[arg-type]
        return below, checkouts(registry)

    assert in_child(child, fork=outer) == ((0, 2), 5)  # type: ignore[arg-type]
    assert checkouts(registry) == 3


def test_a_process_of_an_injected_identity_is_not_taken_for_a_forked_child(
    first: PoolInstrumentation, registry: CollectorRegistry, tmp_path: Path
) -> None:
    def child() -> object:
        check_out(first, 1)
        fork.use_process_identifier(lambda: 4_999_999)  # not a pid: above the largest pid_max
        instrument_second(registry, tmp_path)
        check_out(first, 1)
        return fork.this_process(), checkouts(registry)

    assert in_child(child) == (4_999_999, 2)  # reset once by os.fork's hook, not again


def token_in(path: Path) -> str:
    return path.read_bytes()[: liveness.TOKEN_BYTES].decode()


@pytest.mark.parametrize("how", ["os", "c"])
def test_a_forked_child_lets_its_parents_lock_and_slot_go_before_writing_files_of_its_own(
    tmp_path: Path, procs: Procs, how: str
) -> None:
    _, found = procs.writer(tmp_path, "--fork", how, "--pools", "2")
    labels = {}
    for role, pid in found.items():
        token = token_in(Path(liveness.lock_path(str(tmp_path), pid)))
        names = stats_files(tmp_path, pid)
        assert len(names) == 2, role  # its own files, one per pool, none of the other's
        for name in names:
            meta, _ = header.parse((tmp_path / name).read_bytes()[: layout.HEADER_BYTES])
            # Taken after the parent's lock and slot were let go: this process's own.
            assert meta["token"] == token, role
            assert token_in(Path(slots.path(str(tmp_path), int(meta["worker"])))) == token
            labels.setdefault(role, set()).add(meta["worker"])
    assert labels == {"parent": {"0"}, "child": {"1"}}
    kill9(found["parent"])  # the child kept no copy of the parent's lock
    reaped = liveness.reap(str(tmp_path))
    assert (reaped.dead, list(reaped.live)) == ([found["parent"]], [found["child"]])
