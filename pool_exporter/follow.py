"""Following an engine's pool through `dispose()`: every pool it gets is wrapped and counted.

`engine.dispose()` (an `OptionEngine`'s too) replaces the pool with `pool.recreate()`.
Listeners registered on the engine carry over to the new pool; a method set on the old pool
instance does not. So each pool's `recreate()` is wrapped as well as its `connect()`: the new
pool is wrapped before the engine hands it to anyone. The `connect` event, which every new pool
inherits, is a fallback (Hooks calls `adopt()` from it).

Besides `connect()`, each pool gets wrappers on the code paths that only some checkouts run,
so that the checkouts that do not run them pay nothing: the driver's connect (a connection
being opened), the pool opening a new connection for a caller that found none idle, and the
wait of a caller on an empty queue (hooks.Hooks builds each wrapper).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.pool import Pool, QueuePool

from .stats import Capacity, PoolStats

Wrapper = Callable[[Callable[..., Any]], Callable[..., Any]]  # an original -> its wrapper


class PoolWrappers(Protocol):
    """The wrappers put on each pool (hooks.Hooks)."""

    def wrap_connect(self, original: Callable[[], Any]) -> Callable[[], Any]: ...
    def wrap_create_connection(self, original: Callable[[], Any]) -> Callable[[], Any]: ...
    def wrap_invoke_creator(self, original: Callable[[Any], Any]) -> Callable[[Any], Any]: ...
    def wrap_queue_wait(self, queue: Any, original: Callable[..., Any]) -> Callable[..., Any]: ...
    def wrap_async_queue_get(
        self, queue: Any, original: Callable[[], Any]
    ) -> Callable[[], Any]: ...


class Patches:
    """Attributes set on the objects of one pool, and how to take each off again: a method
    the class defines is shadowed by an instance attribute, and that attribute removed; an
    attribute the instance had of its own (the pool's `_invoke_creator`) is put back. The
    objects are held weakly: the follower keeps these per pool without keeping the pool."""

    def __init__(self) -> None:
        self._undo: list[tuple[weakref.ref[Any], str, bool, Any]] = []

    def set(self, obj: Any, name: str, wrap: Callable[[Any], Any]) -> None:
        own = vars(obj)
        had = name in own
        previous = own.get(name)
        setattr(obj, name, wrap(getattr(obj, name)))
        self._undo.append((weakref.ref(obj), name, had, previous))

    def undo(self) -> None:
        for ref, name, had, previous in reversed(self._undo):
            obj = ref()
            if obj is None:
                continue
            if had:
                setattr(obj, name, previous)
            else:
                vars(obj).pop(name, None)
        self._undo.clear()


class PoolFollower:
    """Which pool of the engine is counted now, and the wrappers put on each pool it had."""

    def __init__(self, stats: PoolStats, hook_failed: Callable[[str, BaseException], None]) -> None:
        self.stats = stats
        self.hook_failed = hook_failed
        self.pool: Pool | None = None  # the pool counted now; its idle connections are ours
        self._patches: weakref.WeakKeyDictionary[Pool, Patches] = weakref.WeakKeyDictionary()
        self._wrappers: PoolWrappers | None = None
        self.active = False

    def start(self, pool: Pool, wrappers: PoolWrappers) -> None:
        """Follow the engine from `pool`, putting `wrappers`' wrappers on each pool."""
        self._wrappers = wrappers
        self.active = True
        self.adopt(pool)

    def stop(self) -> None:
        """Take the wrappers off every pool still alive; later pools are not followed."""
        self.active = False
        for pool in list(self._patches.keys()):
            self._patches[pool].undo()

    def adopt(self, pool: Pool) -> None:
        """Make `pool` the one counted: wrap it and read its configuration.

        Connections still in a replaced pool are not idle in this one, so idle restarts at 0:
        `dispose()` closed them already, and `dispose(close=False)` abandoned them.
        """
        if pool is self.pool or not self.active or self._wrappers is None:
            return
        capacity = None
        if isinstance(pool, QueuePool):  # AsyncAdaptedQueuePool is one too
            capacity = Capacity(pool.size(), pool._max_overflow, pool.timeout())
        if pool not in self._patches:
            self._patches[pool] = self._wrap(pool, self._wrappers)
        self.pool = pool
        recycle = getattr(pool, "_recycle", -1)
        self.stats.configure(capacity, float(recycle) if recycle >= 0 else None)

    def _wrap(self, pool: Pool, w: PoolWrappers) -> Patches:
        patches = Patches()
        patches.set(pool, "connect", w.wrap_connect)
        patches.set(pool, "recreate", self._wrap_recreate)
        patches.set(pool, "_create_connection", w.wrap_create_connection)
        patches.set(pool, "_invoke_creator", w.wrap_invoke_creator)
        if not isinstance(pool, QueuePool):
            return patches
        queue = pool._pool  # the idle connections
        cond = getattr(queue, "not_empty", None)
        if cond is not None:  # threads: a caller finding the queue empty waits here
            patches.set(cond, "wait", lambda original: w.wrap_queue_wait(queue, original))
            return patches
        # asyncio: AsyncAdaptedQueue awaits its asyncio.Queue's get() when it is empty. The
        # queue is made on first use, here if no checkout came first (it binds no event loop).
        inner = getattr(queue, "_queue", None)
        if inner is not None:
            patches.set(inner, "get", lambda original: w.wrap_async_queue_get(inner, original))
        return patches

    def _wrap_recreate(self, original: Callable[[], Pool]) -> Callable[[], Pool]:
        # Engine.dispose() does `self.pool = self.pool.recreate()`: adopting the new pool here,
        # before it is assigned, leaves no moment in which a checkout could miss the wrapper.
        def recreate() -> Pool:
            pool = original()
            try:
                self.adopt(pool)
            except Exception as exc:
                self.hook_failed("recreate", exc)
            return pool

        recreate.__wrapped__ = original  # type: ignore[attr-defined]
        return recreate
