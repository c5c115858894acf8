"""`instrument()`: attach guarded pool hooks and a checkout wrapper to one engine.

How the numbers stay exact (docs/internals.md has the evidence, each point with its test):

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
- The checkouts still out are an insertion-ordered dict keyed by connection record, so the
  oldest is its first item; the start of that one is the one published field
  (`PoolStats.oldest_checkout_started`) and its age is computed at scrape time.
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

from . import holders, multiprocess
from .collector import PoolSource, collector_for
from .holders import Borrow, Checkout
from .stats import CANCELLED, CONNECT_ERROR, ERROR, TIMEOUT, Capacity, PoolStats, new_stats

log = logging.getLogger("pool_exporter")

# The pool a ConnectionPoolEntry belongs to: SQLAlchemy keeps it in a private attribute, and
# a connection returned to a pool that dispose() replaced is not idle in ours.
_RECORD_POOL = "_ConnectionRecord__pool"

# The record_info marker of a connection that sits idle in the pool. A checked-out one holds
# the perf_counter() of its checkout instead.
IDLE = "idle"

# What a checkin pops from the dict of checkouts when the connection was not in it.
_NOT_OUT = object()

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
    long_checkout_threshold: float | None = None,
) -> PoolInstrumentation:
    """Export the pool metrics of `engine` (an `Engine` or `AsyncEngine`).

    `name` is the `pool` label; by default it is derived from the URL's dialect and database,
    never its user, password or host. `registry` defaults to prometheus-client's global one.
    With `dispose_on_fork`, a forked child calls `engine.dispose(close=False)` so it never
    shares its parent's sockets (SQLAlchemy's advice for multiprocessing).

    With `long_checkout_threshold` (seconds), a connection held longer is counted once in
    `sqlalchemy_pool_long_checkouts_total` and logged at WARNING with where it was borrowed,
    then at INFO when it comes back; the borrow site is captured at every checkout.

    Calling it again for the same engine returns the existing handle.
    """
    sync_engine = _sync_engine(engine)
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    threshold = _threshold(long_checkout_threshold)
    with _handles_lock:
        existing = _handles.get(sync_engine)
        if existing is not None and existing.active:
            if name is not None and name != existing.name:
                raise ValueError(
                    f"engine is already instrumented as pool {existing.name!r}; "
                    f"call .uninstrument() on that handle before naming it {name!r}"
                )
            if threshold is not None and threshold != existing.long_checkout_threshold:
                raise ValueError(
                    f"engine is already instrumented with long_checkout_threshold="
                    f"{existing.long_checkout_threshold!r}; call .uninstrument() on that "
                    "handle first"
                )
            return existing
        handle = PoolInstrumentation(
            sync_engine,
            name=name,
            registry=REGISTRY if registry is None else registry,
            dispose_on_fork=dispose_on_fork,
            long_checkout_threshold=threshold,
        )
        _handles[sync_engine] = handle
        return handle


def _threshold(value: object) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 < value < float("inf")
    ):
        raise ValueError(
            f"long_checkout_threshold must be a positive number of seconds, got {value!r}"
        )
    return float(value)


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
    url = _read(engine, "url")
    backend = _text(_read(url, "get_backend_name", call=True)) or _dialect_info(engine)["dialect"]
    database = _text(_read(url, "database"))
    if backend == "sqlite":
        database = "memory" if database in ("", ":memory:") else PurePath(database).name
    return f"{backend}/{database}" if database else backend or "engine"


def _read(obj: Any, attribute: str, *, call: bool = False) -> Any:
    """`obj.attribute` (called, with `call`), or None: an Engine built by hand may have a
    dialect without `driver`, or one whose `loaded_dbapi` raises because it has no DBAPI, and
    instrumenting it must not fail for that."""
    try:
        value = getattr(obj, attribute)
        return value() if call else value
    except Exception:
        return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _dialect_info(engine: Engine) -> dict[str, str]:
    dialect = _read(engine, "dialect")
    return {"dialect": _text(_read(dialect, "name")), "driver": _text(_read(dialect, "driver"))}


class PoolInstrumentation:
    """The handle `instrument()` returns: the pool's name, its stats, and `uninstrument()`."""

    def __init__(
        self,
        engine: Engine,
        *,
        name: str | None,
        registry: CollectorRegistry,
        dispose_on_fork: bool,
        long_checkout_threshold: float | None = None,
    ) -> None:
        self.engine = engine
        self.long_checkout_threshold = long_checkout_threshold
        # record -> its fairy's weakref, in checkout order: the first item is the oldest. The
        # weakref tells a checkin the garbage collector made (the fairy is gone) from a close.
        self._outstanding: dict[Any, Any] = {}
        self._oldest: Any = None  # the record whose start is published
        self._borrows: dict[Any, Borrow] = {}  # record -> borrow site, with a threshold only
        self._gc_logged: set[object] = set()
        self._long_lock = threading.RLock()  # reentrant: a GC checkin can run inside it
        self.registry = registry
        self.dispose_on_fork = dispose_on_fork
        self._collector = collector_for(registry)
        self.name = name if name is not None else self._free_name(default_name(engine))
        info = {"pool_class": type(engine.pool).__name__, **_dialect_info(engine)}
        self.stats = _new_stats(self.name, info)
        self._key = object()  # the record_info key; a new one after fork ignores old markers
        self._pool: Pool | None = None
        self._wrapped: weakref.WeakSet[Pool] = weakref.WeakSet()
        self._logged: set[str] = set()
        dbapi_error = _read(_read(_read(engine, "dialect"), "loaded_dbapi"), "Error")
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
        if long_checkout_threshold is not None:
            holders.watcher.add(self)

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
            holders.watcher.discard(self)
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
        out, borrows = self._outstanding, self._borrows
        watch = self.long_checkout_threshold is not None

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
                record = fairy._connection_record
                info = record.record_info
                key = handle._key
                prev = info.get(key)
                if prev is None or prev is IDLE:
                    info[key] = t1
                    out[record] = record.fairy_ref
                    if len(out) == 1:  # then it is this one: only its borrower can return it
                        handle._oldest = record
                        stats.oldest_changed(time.time())
                    if watch:
                        borrows[record] = Borrow()
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
        stats = self.stats
        checked_in = stats.checked_in
        handle = self
        record_pool = _RECORD_POOL
        out, borrows = self._outstanding, self._borrows
        threshold = self.long_checkout_threshold
        not_out = _NOT_OUT

        def on_checkin(dbapi_connection: Any, record: Any) -> None:
            try:
                info = record.record_info
                key = handle._key
                prev = info.pop(key, None)
                hold = perf_counter() - prev if prev.__class__ is float else None
                ref = out.pop(record, not_out)
                if ref is not not_out:
                    if out or ref is None or ref() is None:
                        handle._released(record, ref)
                    else:  # the common case: the last one out came back
                        handle._oldest = None
                        stats.oldest_changed(0.0)
                        if out:  # another thread checked out meanwhile
                            handle._publish_oldest()
                    if threshold is not None:
                        borrow = borrows.pop(record, None)
                        if borrow is not None and (
                            borrow.long or (hold is not None and hold >= threshold)
                        ):
                            handle._long_returned(borrow, hold)
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

    # -- checkouts still out ---------------------------------------------------------------

    def _released(self, record: Any, ref: Any) -> None:
        """A checkout ended (checkin or detach) other than the last one out closing normally."""
        if ref is not None and ref() is None:  # the fairy is gone: the GC is returning it
            self._collected(record)
        if record is self._oldest or not self._outstanding:
            self._publish_oldest()

    def _long_returned(self, borrow: Borrow, hold: float | None) -> None:
        """A checkout with a borrow site came back: count it if the watcher has not yet."""
        threshold = self.long_checkout_threshold
        if threshold is not None and hold is not None and hold >= threshold:
            self._report_long(borrow, hold)  # came back before the watcher woke
        if borrow.long:
            log.info(
                "pool %r: the long checkout borrowed at %s came back after %.1f s",
                self.name,
                borrow.site or "an unknown site",
                hold if hold is not None else float("nan"),
            )

    def _publish_oldest(self) -> None:
        # Checkins and checkouts on other threads can interleave with this; write, then check
        # that the first item is still the one written, so the field never stays stale.
        out = self._outstanding
        for _ in range(8):
            try:
                record = next(iter(out), None)
            except RuntimeError:  # the dict changed size between iter() and next()
                continue
            start = None if record is None else record.record_info.get(self._key)
            self._oldest = record
            # Unix time, for a sidecar in another process; converted from the hooks'
            # perf_counter() now rather than with an offset kept since start-up, so a step of
            # the wall clock cannot shift every later age.
            self.stats.oldest_changed(
                time.time() - (perf_counter() - start) if start.__class__ is float else 0.0
            )
            try:
                if next(iter(out), None) is record:
                    return
            except RuntimeError:
                continue

    def _collected(self, record: Any) -> None:
        self.stats.collected()
        borrow = self._borrows.get(record)
        site = borrow.site if borrow is not None else None
        first = site not in self._gc_logged
        self._gc_logged.add(site)
        log.log(
            logging.WARNING if first else logging.DEBUG,
            "pool %r: the garbage collector returned a connection the application never "
            "closed (counted in sqlalchemy_pool_gc_returned_connections_total), borrowed at %s",
            self.name,
            site or "an unknown site (set long_checkout_threshold to record it)",
        )

    def _report_long(self, borrow: Borrow, age: float) -> None:
        with self._long_lock:
            if borrow.long:
                return
            borrow.long = True
        self.stats.held_long()
        log.warning(
            "pool %r: a connection has been checked out for %.1f s (long_checkout_threshold "
            "%.1f s), borrowed at %s by thread %r%s",
            self.name,
            age,
            self.long_checkout_threshold,
            borrow.site or "an unknown site",
            borrow.thread,
            f" task {borrow.task!r}" if borrow.task else "",
        )

    def check_long(self, now: float) -> float | None:
        """Report the checkouts held past the threshold (the watcher thread calls this);
        returns the perf_counter() at which the next one is due, if any is out."""
        threshold = self.long_checkout_threshold
        if threshold is None or not self.active:
            return None
        try:
            for record in list(self._outstanding):
                start = record.record_info.get(self._key)
                if start.__class__ is not float:
                    continue
                due: float = start + threshold
                if due > now:
                    return due
                borrow = self._borrows.get(record)
                if borrow is not None and not borrow.long:
                    self._report_long(borrow, now - start)
        except Exception as exc:
            self._hook_error("long_checkout", exc)
        return None

    def checkouts(self) -> list[Checkout]:
        """The connections out of the pool now, oldest first: age and, with a threshold set,
        where and by which thread or task they were borrowed. Never SQL or parameters."""
        now = perf_counter()
        found = []
        for record in list(self._outstanding):
            start = record.record_info.get(self._key)
            if start.__class__ is not float:
                continue
            borrow = self._borrows.get(record)
            found.append(
                Checkout(
                    age=now - start,
                    site=borrow.site if borrow else None,
                    thread=borrow.thread if borrow else None,
                    task=borrow.task if borrow else None,
                    long=borrow.long if borrow else False,
                )
            )
        found.sort(key=lambda c: -c.age)
        return found

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
            hold = perf_counter() - prev if prev.__class__ is float else None
            ref = self._outstanding.pop(record, _NOT_OUT)
            if ref is not _NOT_OUT:
                self._released(record, ref)
                borrow = self._borrows.pop(record, None)
                if borrow is not None:
                    self._long_returned(borrow, hold)
            self.stats.detached(hold)
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
        self._outstanding.clear()  # cleared, not replaced: the hooks hold these dicts
        self._borrows.clear()
        self._oldest = None
        self._gc_logged = set()
        if self.long_checkout_threshold is not None:
            holders.watcher.add(self)
        if self.dispose_on_fork:
            self.engine.dispose(close=False)


def current_checkouts() -> dict[str, list[Checkout]]:
    """Every instrumented pool of this process: the connections out now (`checkouts()`)."""
    return {h.name: h.checkouts() for h in sorted(list(_live), key=lambda h: h.name) if h.active}


def _new_stats(name: str, info: dict[str, str]) -> PoolStats:
    directory = multiprocess.directory()
    if directory is not None:
        from pool_exporter.multiprocess import store

        return store.new_stats(name, info, directory)
    return new_stats()


_live: weakref.WeakSet[PoolInstrumentation] = weakref.WeakSet()


def _reset_after_fork() -> None:
    holders.watcher.after_fork()
    for handle in list(_live):
        try:
            handle._after_fork_in_child()
        except Exception as exc:
            handle._hook_error("fork", exc)


os.register_at_fork(after_in_child=_reset_after_fork)
