"""Following an engine's pool through `dispose()`: every pool it gets is wrapped and counted.

`engine.dispose()` (an `OptionEngine`'s too) replaces the pool with `pool.recreate()`.
Listeners registered on the engine carry over to the new pool; a method set on the old pool
instance does not. So each pool's `recreate()` is wrapped as well as its `connect()`: the new
pool is wrapped before the engine hands it to anyone. The `connect` event, which every new pool
inherits, is a fallback (Hooks calls `adopt()` from it).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from sqlalchemy.pool import Pool, QueuePool

from .stats import Capacity, PoolStats

Wrapper = Callable[[Callable[[], Any]], Callable[[], Any]]  # a pool's connect() -> its wrapper


class PoolFollower:
    """Which pool of the engine is counted now, and the wrappers put on each pool it had."""

    def __init__(self, stats: PoolStats, hook_failed: Callable[[str, BaseException], None]) -> None:
        self.stats = stats
        self.hook_failed = hook_failed
        self.pool: Pool | None = None  # the pool counted now; its idle connections are ours
        self._wrapped: weakref.WeakSet[Pool] = weakref.WeakSet()
        self._wrap_connect: Wrapper | None = None
        self.active = False

    def start(self, pool: Pool, wrap_connect: Wrapper) -> None:
        """Follow the engine from `pool`, putting `wrap_connect(pool.connect)` on each pool."""
        self._wrap_connect = wrap_connect
        self.active = True
        self.adopt(pool)

    def stop(self) -> None:
        """Take the wrappers off every pool still alive; later pools are not followed."""
        self.active = False
        for pool in list(self._wrapped):
            pool.__dict__.pop("connect", None)
            pool.__dict__.pop("recreate", None)

    def adopt(self, pool: Pool) -> None:
        """Make `pool` the one counted: wrap it and read its configuration.

        Connections still in a replaced pool are not idle in this one, so idle restarts at 0:
        `dispose()` closed them already, and `dispose(close=False)` abandoned them.
        """
        if pool is self.pool or not self.active or self._wrap_connect is None:
            return
        capacity = None
        if isinstance(pool, QueuePool):  # AsyncAdaptedQueuePool is one too
            capacity = Capacity(pool.size(), pool._max_overflow, pool.timeout())
        if pool not in self._wrapped:
            pool.connect = self._wrap_connect(pool.connect)  # type: ignore[method-assign]
            pool.recreate = self._wrap_recreate(pool.recreate)  # type: ignore[method-assign]
            self._wrapped.add(pool)
        self.pool = pool
        self.stats.configure(capacity)

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
