"""`instrument()`: attach guarded pool hooks and a checkout wrapper to one engine.

How the numbers stay exact (see ../shared/notes/sqlalchemy-pool.md for the evidence):

- Checkouts, callers waiting, wait time and timeouts come from a wrapper around the pool
  instance's `connect()`: no pool event fires while a caller waits or when QueuePool raises its
  TimeoutError. `engine.dispose()` (an `OptionEngine`'s too) replaces the pool with
  `pool.recreate()`, so that is wrapped as well: the new pool is wrapped before the engine hands
  it to anyone. The `connect` event, which every new pool inherits, is a fallback.
- Whether a connection is in use or idle is a marker in its `ConnectionPoolEntry.record_info`,
  set by the wrapper and cleared by `checkin`/`detach`/`close`. Counting each event as +1/-1
  drifts: `checkin` fires without a checkout when a reconnect fails, a detached or
  garbage-collected async connection never gets `checkin`, and pools hand out one record twice.
- Every hook body is guarded: a failure is counted in `pool_exporter_hook_errors_total` and
  logged, never raised into the application's checkout.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
import traceback
import weakref
from collections.abc import Callable
from pathlib import PurePath
from time import perf_counter
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool, QueuePool

from . import multiprocess
from .collector import PoolSource, collector_for
from .stats import CANCELLED, CONNECT_ERROR, ERROR, TIMEOUT, Capacity, PoolStats, new_stats

log = logging.getLogger("pool_exporter")

# The pool a ConnectionPoolEntry belongs to: SQLAlchemy keeps it in a private attribute, and
# a connection returned to a pool that dispose() replaced is not idle in ours.
_RECORD_POOL = "_ConnectionRecord__pool"

# The record_info marker of a connection that sits idle in the pool. A checked-out one holds
# the perf_counter() of its checkout instead.
IDLE = "idle"

_LISTENERS = (
    "connect",
    "checkin",
    "detach",
    "close",
    "close_detached",
    "invalidate",
    "soft_invalidate",
)

_handles: weakref.WeakKeyDictionary[Engine, PoolInstrumentation] = weakref.WeakKeyDictionary()
_handles_lock = threading.RLock()


def instrument(
    engine: Any,
    *,
    name: str | None = None,
    registry: CollectorRegistry | None = None,
    dispose_on_fork: bool = False,
) -> PoolInstrumentation:
    """Export the pool metrics of `engine` (an `Engine` or `AsyncEngine`).

    `name` is the `pool` label; by default it is derived from the URL's dialect and database,
    never its user, password or host. `registry` defaults to prometheus-client's global one.
    With `dispose_on_fork`, a forked child calls `engine.dispose(close=False)` so it never
    shares its parent's sockets (SQLAlchemy's advice for multiprocessing).

    Calling it again for the same engine returns the existing handle.
    """
    sync_engine = _sync_engine(engine)
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    with _handles_lock:
        existing = _handles.get(sync_engine)
        if existing is not None and existing.active:
            if name is not None and name != existing.name:
                raise ValueError(
                    f"engine is already instrumented as pool {existing.name!r}; "
                    f"call .uninstrument() on that handle before naming it {name!r}"
                )
            return existing
        handle = PoolInstrumentation(
            sync_engine,
            name=name,
            registry=REGISTRY if registry is None else registry,
            dispose_on_fork=dispose_on_fork,
        )
        _handles[sync_engine] = handle
        return handle


def _sync_engine(engine: Any) -> Engine:
    # An AsyncEngine is recognised by its sync_engine: importing sqlalchemy.ext.asyncio needs
    # greenlet, which SQLAlchemy 2.1 no longer installs by default.
    candidate = getattr(engine, "sync_engine", engine)
    if isinstance(candidate, Engine):
        return candidate
    kind = f"{type(engine).__module__}.{type(engine).__qualname__}"
    hint = ""
    if callable(getattr(engine, "get_bind", None)):
        hint = " (for a Session, pass session.get_bind())"
    elif isinstance(engine, Pool):
        hint = " (pass the engine that owns the pool)"
    raise TypeError(f"instrument() takes a sqlalchemy Engine or AsyncEngine, got {kind}{hint}")


def default_name(engine: Engine) -> str:
    """`dialect/database` from the engine's URL: readable, and free of credentials."""
    url = engine.url
    database = url.database or ""
    if url.get_backend_name() == "sqlite":
        database = "memory" if database in ("", ":memory:") else PurePath(database).name
    return f"{url.get_backend_name()}/{database}" if database else url.get_backend_name()


class PoolInstrumentation:
    """The handle `instrument()` returns: the pool's name, its stats, and `uninstrument()`."""

    def __init__(
        self,
        engine: Engine,
        *,
        name: str | None,
        registry: CollectorRegistry,
        dispose_on_fork: bool,
    ) -> None:
        self.engine = engine
        self.registry = registry
        self.dispose_on_fork = dispose_on_fork
        self._collector = collector_for(registry)
        self.name = name if name is not None else self._free_name(default_name(engine))
        info = {
            "pool_class": type(engine.pool).__name__,
            "dialect": engine.dialect.name,
            "driver": str(engine.dialect.driver),
        }
        self.stats = _new_stats(self.name, info)
        self._key = object()  # the record_info key; a new one after fork ignores old markers
        self._pool: Pool | None = None
        self._wrapped: weakref.WeakSet[Pool] = weakref.WeakSet()
        self._logged: set[str] = set()
        dbapi_error = getattr(getattr(engine.dialect, "loaded_dbapi", None), "Error", None)
        self._connect_errors: tuple[type[BaseException], ...] = (sa_exc.DBAPIError,)
        if isinstance(dbapi_error, type) and issubclass(dbapi_error, BaseException):
            self._connect_errors += (dbapi_error,)

        self._on_checkin = self._checkin_listener()
        self._adopt(engine.pool)
        self._collector.add(PoolSource(self.name, self.stats, info))
        for identifier in _LISTENERS:
            event.listen(
                engine,
                identifier,
                getattr(self, f"_on_{identifier}"),
                insert=identifier == "connect",
            )
        _live.add(self)
        self.active = True

    def __repr__(self) -> str:
        state = "active" if self.active else "removed"
        return f"<PoolInstrumentation pool={self.name!r} {state}>"

    def _free_name(self, base: str) -> str:
        taken = self._collector.names()
        name, n = base, 2
        while name in taken:
            name, n = f"{base}#{n}", n + 1
        return name

    def uninstrument(self) -> None:
        """Remove every hook and the wrapper; the pool's series leave the registry."""
        with _handles_lock:
            if not self.active:
                return
            self.active = False
            for identifier in _LISTENERS:
                fn = getattr(self, f"_on_{identifier}")
                if event.contains(self.engine, identifier, fn):
                    event.remove(self.engine, identifier, fn)
            for pool in list(self._wrapped):
                pool.__dict__.pop("connect", None)
                pool.__dict__.pop("recreate", None)
            self._collector.remove(self.name)
            self.stats.retire()
            _live.discard(self)
            if _handles.get(self.engine) is self:
                del _handles[self.engine]

    # -- following the engine's pool -------------------------------------------------------

    def _adopt(self, pool: Pool) -> None:
        """Make `pool` the one this handle counts: wrap it and read its configuration.

        Connections still in a replaced pool are not idle in this one, so idle restarts at 0:
        `dispose()` closed them already, and `dispose(close=False)` abandoned them.
        """
        if pool is self._pool:
            return
        capacity = None
        if isinstance(pool, QueuePool):  # AsyncAdaptedQueuePool is one too
            capacity = Capacity(pool.size(), pool._max_overflow, pool.timeout())
        if pool not in self._wrapped:
            pool.connect = self._wrap(pool.connect)  # type: ignore[method-assign]
            pool.recreate = self._wrap_recreate(pool.recreate)  # type: ignore[method-assign]
            self._wrapped.add(pool)
        self._pool = pool
        self.stats.configure(capacity)

    def _wrap_recreate(self, original: Callable[[], Pool]) -> Callable[[], Pool]:
        # Engine.dispose() does `self.pool = self.pool.recreate()`: adopting the new pool here,
        # before it is assigned, leaves no moment in which a checkout could miss the wrapper.
        handle = self

        def recreate() -> Pool:
            pool = original()
            try:
                if handle.active:
                    handle._adopt(pool)
            except Exception as exc:
                handle._hook_error("recreate", exc)
            return pool

        recreate.__wrapped__ = original  # type: ignore[attr-defined]
        return recreate

    def _wrap(self, original: Callable[[], Any]) -> Callable[[], Any]:
        stats = self.stats
        enter, checked_out, failed = stats.enter, stats.checked_out, stats.failed
        handle = self

        def connect() -> Any:
            t0 = perf_counter()
            try:
                enter()
            except Exception as exc:
                handle._hook_error("checkout", exc)
                return original()
            try:
                fairy = original()
            except BaseException as exc:
                try:
                    failed(handle._reason(exc))
                except Exception as hook_exc:
                    handle._hook_error("checkout", hook_exc)
                raise
            try:
                t1 = perf_counter()
                # the public fairy.record_info is a property chain that costs a tenth of the
                # exporter's budget per checkout; the record it reads is this attribute
                info = fairy._connection_record.record_info
                key = handle._key
                prev = info.get(key)
                if prev is None or prev is IDLE:
                    info[key] = t1
                    checked_out(t1 - t0, True, prev is IDLE)
                else:  # the pool handed out a connection that is already checked out
                    checked_out(t1 - t0, False, False)
            except Exception as exc:
                handle._hook_error("checkout", exc)
            return fairy

        connect.__wrapped__ = original  # type: ignore[attr-defined]
        return connect

    def _checkin_listener(self) -> Callable[[Any, Any], None]:
        # A closure over locals rather than a bound method: it runs on every checkin.
        checked_in = self.stats.checked_in
        handle = self
        record_pool = _RECORD_POOL

        def on_checkin(dbapi_connection: Any, record: Any) -> None:
            try:
                info = record.record_info
                key = handle._key
                prev = info.pop(key, None)
                hold = perf_counter() - prev if prev.__class__ is float else None
                pool = handle._pool
                now_idle = dbapi_connection is not None and (
                    getattr(record, record_pool, pool) is pool
                )
                if now_idle:
                    info[key] = IDLE
                checked_in(hold, now_idle and prev is not IDLE)
            except Exception as exc:
                handle._hook_error("checkin", exc)

        return on_checkin

    def _reason(self, exc: BaseException) -> str:
        if isinstance(exc, sa_exc.TimeoutError):
            return TIMEOUT
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit | GeneratorExit):
            return CANCELLED
        if isinstance(exc, self._connect_errors):
            return CONNECT_ERROR
        return ERROR

    # -- the pool event listeners -----------------------------------------------------------

    def _on_detach(self, dbapi_connection: Any, record: Any) -> None:
        try:
            prev = record.record_info.pop(self._key, None)
            self.stats.detached(perf_counter() - prev if prev.__class__ is float else None)
        except Exception as exc:
            self._hook_error("detach", exc)

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        try:
            # A no-op for the pools recreate() made; a safety net for one made another way.
            self._adopt(self.engine.pool)
            # The pool stamps starttime right before calling the driver, and this listener runs
            # first (insert=True), so the difference is the driver's connect time.
            started = getattr(record, "starttime", None)
            seconds = max(0.0, time.time() - started) if started else 0.0
            self.stats.connected(seconds)
        except Exception as exc:
            self._hook_error("connect", exc)

    def _on_close(self, dbapi_connection: Any, record: Any) -> None:
        try:
            info = record.record_info
            was_idle = info.get(self._key) is IDLE
            if was_idle:  # a checked-out connection keeps its marker until checkin or detach
                del info[self._key]
            # idle restarted at 0 when a pool was replaced: its connections no longer count
            ours = getattr(record, _RECORD_POOL, self._pool) is self._pool
            self.stats.closed(was_idle and ours)
        except Exception as exc:
            self._hook_error("close", exc)

    def _on_close_detached(self, dbapi_connection: Any) -> None:
        try:
            self.stats.closed(False)
        except Exception as exc:
            self._hook_error("close_detached", exc)

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        try:
            self.stats.invalidated(soft=False)
        except Exception as exc:
            self._hook_error("invalidate", exc)

    def _on_soft_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        try:
            self.stats.invalidated(soft=True)
        except Exception as exc:
            self._hook_error("soft_invalidate", exc)

    def _hook_error(self, hook: str, exc: BaseException) -> None:
        try:
            self.stats.hook_failed(hook)
            # The first failure of each hook is logged with its traceback; repeats would flood
            # the application's log from its hottest path, so they go to debug.
            first = hook not in self._logged
            self._logged.add(hook)
            # chain=False: the application's own exception (a driver error naming its host,
            # say) that was being handled at the time is not ours to log.
            trace = "".join(traceback.format_exception(exc, chain=False)) if first else ""
            log.log(
                logging.ERROR if first else logging.DEBUG,
                "pool-exporter hook %r failed for pool %r (counted in "
                "pool_exporter_hook_errors_total; the application is unaffected): %s: %s\n%s",
                hook,
                self.name,
                type(exc).__name__,
                exc,
                trace,
            )
        except Exception:  # never let bookkeeping about a failure become one
            pass

    # -- fork -----------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        # A child must not report its parent's numbers, and the markers the parent left in
        # record_info describe the parent's connections: a new key ignores them.
        self.stats.reset()
        self._key = object()
        self._logged = set()
        if self.dispose_on_fork:
            self.engine.dispose(close=False)


def _new_stats(name: str, info: dict[str, str]) -> PoolStats:
    directory = multiprocess.directory()
    if directory is not None:
        from pool_exporter.multiprocess import store

        return store.new_stats(name, info, directory)
    return new_stats()


_live: weakref.WeakSet[PoolInstrumentation] = weakref.WeakSet()


def _reset_after_fork() -> None:
    for handle in list(_live):
        try:
            handle._after_fork_in_child()
        except Exception as exc:
            handle._hook_error("connect", exc)


os.register_at_fork(after_in_child=_reset_after_fork)
