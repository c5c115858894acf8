"""Fork: a forked child forgets its parent's numbers and checkouts, and counts its own.

A child inherits the parent's memory: without a reset it would report the parent's numbers,
treat the parent's checked-out connections as its own, and have no long-checkout watcher
(threads do not survive `fork()`). `reset_as_forked_child()` is the one entry point;
`os.register_at_fork` runs it in every child that Python's `os.fork()` makes.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import TYPE_CHECKING

from . import checkouts

if TYPE_CHECKING:
    from .instrument import PoolInstrumentation

# The handles a child must reset: every one instrumented and not yet uninstrumented.
_instrumented: weakref.WeakSet[PoolInstrumentation] = weakref.WeakSet()


def hold_across_fork(lock: threading.RLock) -> None:
    """Make `os.fork()` wait until no other thread holds `lock`: a child would otherwise
    inherit it held by a thread it does not have, and block forever on its first use."""
    os.register_at_fork(
        before=lock.acquire, after_in_parent=lock.release, after_in_child=lock.release
    )


def register(handle: PoolInstrumentation) -> None:
    _instrumented.add(handle)


def unregister(handle: PoolInstrumentation) -> None:
    _instrumented.discard(handle)


def reset_as_forked_child() -> None:
    """Reset this process's instrumentation as a forked child: every instrumented pool starts
    from zero with a new marker key (so the parent's markers on inherited connections mean
    nothing), logs its next hook failure in full, gets a long-checkout watcher of its own, and
    with `dispose_on_fork` calls `engine.dispose(close=False)`.

    `os.register_at_fork` calls it in every child of `os.fork()`. Call it yourself in a child
    made by a fork that bypasses Python's fork hooks (a C extension or server calling fork()
    directly): once, in the child, before it checks out. Each call forgets everything counted
    before it. A failure is counted under `hook="fork"` and the child goes on.
    """
    checkouts.watcher.after_fork()
    for handle in list(_instrumented):
        try:
            _reset(handle)
        except Exception as exc:
            handle.hook_failed("fork", exc)


def _reset(handle: PoolInstrumentation) -> None:
    handle.tracker.forget()
    handle.hook_failed.forget()
    handle.stats.reset()
    if handle.routes is not None:
        handle.routes.forget()
    handle.tracker.watch()
    if handle.dispose_on_fork:
        handle.engine.dispose(close=False)


os.register_at_fork(after_in_child=reset_as_forked_child)
