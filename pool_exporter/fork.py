"""Fork: which process this is, and a forked child's reset, in one declared order.

A child inherits the parent's memory: without a reset it would report the parent's numbers,
treat the parent's checked-out connections as its own, keep a copy of the parent's liveness
lock and worker slot (holding them after the parent exits), and have no long-checkout
watcher (threads do not survive `fork()`). This is the only module that registers with
`os.register_at_fork`, and the only one that knows "this process": the others ask
`this_process()`.

`reset_as_forked_child()` is the one entry point of the reset: Python's `os.fork()` runs it in
every child; a child forked from C (uWSGI's workers) runs it itself, or through
`reset_if_forked()`, which instrument() and uWSGI's post-fork hook call.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import checkouts
from .multiprocess import liveness, slots

if TYPE_CHECKING:
    from .instrument import PoolInstrumentation

log = logging.getLogger("pool_exporter")

# This process's identity: its pid, unless a test injects another function (as
# prometheus-client's values.MultiProcessValue takes `process_identifier`).
_process_identifier: Callable[[], int] = os.getpid
# The process whose numbers, locks and slot this memory holds: this one after each reset.
_reset_as = _process_identifier()

# The handles a child must reset: every one instrumented and not yet uninstrumented.
_instrumented: weakref.WeakSet[PoolInstrumentation] = weakref.WeakSet()
# Locks a fork waits for (no other thread holds them across it): a child would otherwise
# inherit one held by a thread it does not have, and block forever on its first use.
_held_across: list[threading.RLock] = []


def this_process() -> int:
    """This process's identity: its pid (the name of its liveness lock and stats files)."""
    return _process_identifier()


def use_process_identifier(identify: Callable[[], int]) -> None:
    """Take `identify()` as this process's identity from now on (tests choose pids so);
    what this process holds is its own, not a forked child's to reset. A constant identity
    makes every child look like its parent: fork no process that is given one."""
    global _process_identifier, _reset_as
    _process_identifier = identify
    _reset_as = identify()


def hold_across_fork(lock: threading.RLock) -> None:
    """Make `os.fork()` wait until no other thread holds `lock`."""
    _held_across.append(lock)


def register(handle: PoolInstrumentation) -> None:
    _instrumented.add(handle)


def unregister(handle: PoolInstrumentation) -> None:
    _instrumented.discard(handle)


def reset_as_forked_child() -> None:
    """Reset this process's instrumentation as a forked child: every instrumented pool starts
    from zero with a new marker key (so the parent's markers on inherited connections mean
    nothing), logs its next hook failure in full, writes a stats file of its own (multiprocess
    mode), and with `dispose_on_fork` calls `engine.dispose(close=False)`; the long-checkout
    watcher runs again.

    Python's `os.fork()` calls it in every child. Call it yourself in a child made by a fork
    that bypasses Python's fork hooks (a C extension or server calling fork() directly):
    once, in the child, before it checks out. Each call forgets everything counted before
    it. A failure is counted under `hook="fork"` and the child goes on.
    """
    global _reset_as
    _reset_as = this_process()
    # In this order. The parent's liveness lock and worker slot go first: a handle's reset
    # opens its new stats file, which takes this child's own lock and slot. The watcher
    # starts last, to watch the checkouts the handles start again from.
    liveness.HELD.drop_inherited()
    slots.CLAIMED.drop_inherited()
    for handle in list(_instrumented):
        try:
            handle.reset_after_fork()
        except Exception as exc:
            handle.hook_failed("fork", exc)
    try:
        checkouts.watcher.after_fork()
    except Exception:  # no thread can be started: the child goes on without the watcher
        log.exception("pool-exporter could not start the long-checkout watcher after a fork")


def reset_if_forked() -> None:
    """Reset this process as a forked child unless it has been reset since it was forked:
    for a child forked from C, where Python's hook did not run. One call of the identity;
    called where it is rare (instrument(), uWSGI's post-fork hook), never per checkout."""
    if this_process() != _reset_as:
        reset_as_forked_child()


def _before() -> None:
    for lock in _held_across:
        lock.acquire()


def _after() -> None:
    for lock in reversed(_held_across):
        lock.release()


def _after_in_child() -> None:
    _after()
    reset_as_forked_child()


os.register_at_fork(before=_before, after_in_parent=_after, after_in_child=_after_in_child)
