"""The pool hooks of one handle: the checkout wrapper, the checkin listener, the other pool
event listeners, and `HookErrors`, the one place a failure inside any of them is handled.

How the numbers stay exact (docs/internals.md has the evidence, each point with its test):

- Checkouts, callers waiting, wait time and timeouts come from a wrapper around the pool
  instance's `connect()`: no pool event fires while a caller waits or when QueuePool raises its
  TimeoutError. follow.py puts the wrapper on every pool the engine gets through `dispose()`.
- Whether a connection is in use or idle is a marker in its `ConnectionPoolEntry.record_info`,
  kept by checkouts.CheckoutTracker: the hooks report each event to it, and it tells the stats
  what changed state. Counting each event as +1/-1 drifts: `checkin` fires without a checkout
  when a reconnect fails, a detached or garbage-collected async connection never gets
  `checkin`, and pools hand out one record twice.
- Every hook body is guarded: a failure is counted in `pool_exporter_hook_errors_total` and
  logged, never raised into the application's checkout.
- Why a connection closed is read from the pool's code path that closed it (closes.py), in
  the `close` and `close_detached` listeners only.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from .checkouts import WAITED_OUT, CheckoutTracker
from .closes import detached_close_reason, pooled_close_reason
from .metrics import ISOLATION_LEVELS
from .stats import CANCELLED, CONNECT_ERROR, ERROR, TIMEOUT, PoolStats

if TYPE_CHECKING:
    from .follow import PoolFollower
    from .routes import Routes

log = logging.getLogger("pool_exporter")

# The pool a ConnectionPoolEntry belongs to: SQLAlchemy keeps it in a private attribute, and
# a connection returned to a pool that dispose() replaced is not idle in ours.
RECORD_POOL = "_ConnectionRecord__pool"


class HookErrors:
    """Count and log a failure inside a hook; never raise it into the application."""

    def __init__(self, name: str, stats: PoolStats) -> None:
        self.name = name
        self.stats = stats
        self._logged: set[str] = set()

    def forget(self) -> None:
        """Log the next failure of each hook in full again (a forked child's first)."""
        self._logged = set()

    def __call__(self, hook: str, exc: BaseException) -> None:
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


def _connect_errors(engine: Engine) -> tuple[type[BaseException], ...]:
    """The exceptions that mean the database refused a new connection: SQLAlchemy's wrapper
    and the driver's own base class (a pool's connect() can raise either)."""
    found: tuple[type[BaseException], ...] = (sa_exc.DBAPIError,)
    try:
        dbapi_error = engine.dialect.loaded_dbapi.Error
    except Exception:  # a dialect without a DBAPI, as an Engine built by hand may have
        return found
    if isinstance(dbapi_error, type) and issubclass(dbapi_error, BaseException):
        found += (dbapi_error,)
    return found


def isolation_level(engine: Engine) -> str:
    """The isolation level the engine's connections run in: the engine's execution option, or
    the level it sets on each new connection (`create_engine(isolation_level=...)`), or the
    database's default, which the dialect reads on its first connection; "" while none is
    known."""
    dialect = engine.dialect
    for level in (
        engine.get_execution_options().get("isolation_level"),
        getattr(dialect, "_on_connect_isolation_level", None),
        getattr(dialect, "default_isolation_level", None),
    ):
        if isinstance(level, str) and level:
            return level
    return ""


class Hooks:
    """The checkout wrapper and the pool event listeners of one instrumented engine.

    The wrapper and the checkin listener run on every checkout and checkin: they are closures
    holding the bound methods they call (the tracker's and the stats'), each read from a cell
    rather than looked up as an attribute at every call. With `routes` (instrument()'s
    `route=`) each is another closure that also counts the checkout's route, so without it
    the checkout pays nothing for routes. The other listeners run when connections open,
    close, detach or are invalidated.

    The isolation level goes to the stats once the dialect knows it: at once when the
    engine sets it, else after the first connection.
    """

    def __init__(
        self,
        engine: Engine,
        stats: PoolStats,
        tracker: CheckoutTracker,
        follower: PoolFollower,
        hook_failed: HookErrors,
        *,
        routes: Routes | None = None,
    ) -> None:
        self.engine = engine
        self.stats = stats
        self.tracker = tracker
        self.follower = follower
        self.hook_failed = hook_failed
        self.routes = routes
        self._connect_errors = _connect_errors(engine)
        self.on_checkin = (
            self._checkin_listener() if routes is None else self._routed_checkin_listener(routes)
        )
        # identifier -> listener; event.remove() needs the very function event.listen() got
        self.listeners: dict[str, Callable[..., None]] = {
            "connect": self._guarded("connect", self._on_connect),
            "checkin": self.on_checkin,
            "detach": self._guarded("detach", self._on_detach),
            "close": self._guarded("close", self._on_close),
            "close_detached": self._guarded("close_detached", self._on_close_detached),
            "invalidate": self._guarded("invalidate", self._on_invalidate),
            "soft_invalidate": self._guarded("soft_invalidate", self._on_soft_invalidate),
        }

        # A second `connect` listener, after the engine's own: the dialect reads the database's
        # default isolation level there, on the first connection.
        self.after_connect = self._guarded("connect", self._after_connect)

    def listen(self) -> None:
        for identifier, fn in self.listeners.items():
            # connect first: its listener reads the time the pool stamped before connecting
            event.listen(self.engine, identifier, fn, insert=identifier == "connect")
        if not self._read_isolation_level():
            event.listen(self.engine, "connect", self.after_connect)

    def remove(self) -> None:
        for identifier, fn in [*self.listeners.items(), ("connect", self.after_connect)]:
            if event.contains(self.engine, identifier, fn):
                event.remove(self.engine, identifier, fn)

    def reason(self, exc: BaseException) -> str:
        """Why a checkout failed, as `sqlalchemy_pool_checkout_errors_total` labels it."""
        if isinstance(exc, sa_exc.TimeoutError):
            return TIMEOUT
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit | GeneratorExit):
            return CANCELLED
        if isinstance(exc, self._connect_errors):
            return CONNECT_ERROR
        return ERROR

    # -- the hot path ----------------------------------------------------------------------

    def wrap_connect(self, original: Callable[[], Any]) -> Callable[[], Any]:
        """A pool's `connect()` that counts the caller waiting, the wait and the outcome."""
        if self.routes is not None:
            return self._wrap_connect_routed(original, self.routes)
        enter, checked_out = self.stats.enter, self.tracker.checked_out
        hook_failed, checkout_failed = self.hook_failed, self._checkout_failed

        def connect() -> Any:
            since = perf_counter()
            try:
                enter()
            except Exception as exc:
                hook_failed("checkout", exc)
                return original()
            try:
                fairy = original()
            except BaseException as exc:
                checkout_failed(exc, since)
                raise
            try:
                # the public fairy.record_info is a property chain that costs a tenth of the
                # exporter's budget per checkout; the record it reads is this attribute
                checked_out(fairy._connection_record, since)
            except Exception as exc:
                hook_failed("checkout", exc)
            return fairy

        connect.__wrapped__ = original  # type: ignore[attr-defined]
        return connect

    def _wrap_connect_routed(
        self, original: Callable[[], Any], routes: Routes
    ) -> Callable[[], Any]:
        """wrap_connect's connect(), also counting each checkout under its route."""
        enter, checked_out, began = self.stats.enter, self.tracker.checked_out, routes.began
        hook_failed, checkout_failed = self.hook_failed, self._checkout_failed

        def connect() -> Any:
            since = perf_counter()
            try:
                enter()
            except Exception as exc:
                hook_failed("checkout", exc)
                return original()
            try:
                fairy = original()
            except BaseException as exc:
                checkout_failed(exc, since)
                raise
            try:
                record = fairy._connection_record
                out = checked_out(record, since)
                if out:  # counted as a new checkout, not a connection already out
                    began(record, out == WAITED_OUT)
            except Exception as exc:
                hook_failed("checkout", exc)
            return fairy

        connect.__wrapped__ = original  # type: ignore[attr-defined]
        return connect

    def _checkout_failed(self, exc: BaseException, since: float) -> None:
        """Both checkout wrappers' path when the pool's connect() raised `exc` to a caller that
        entered at perf_counter() `since`: the wait it had before it gave up or failed,
        observed under its outcome. The current span hears of it (exemplars.py), as it hears
        of a waited checkout from the tracker's _waited_out: only those two paths read it. A
        method of its own, as the failure is rare: the wrappers keep only the common case
        inline."""
        try:
            why, waited = self.reason(exc), perf_counter() - since
            self.stats.failed(why, waited)
            self.tracker.exemplars.failed(why, waited)
        except Exception as hook_exc:
            self.hook_failed("checkout", hook_exc)

    # -- the paths only some checkouts take: wrapped apart, so the others pay nothing --------

    def wrap_create_connection(self, original: Callable[[], Any]) -> Callable[[], Any]:
        """A pool's `_create_connection()`: the pool opens a connection for a caller that
        found no idle one (its first connections, overflow, every NullPool checkout)."""
        opened, hook_failed = self.tracker.opened, self.hook_failed

        def create_connection() -> Any:
            record = original()
            try:
                opened(record)
            except Exception as exc:
                hook_failed("checkout", exc)
            return record

        create_connection.__wrapped__ = original  # type: ignore[attr-defined]
        return create_connection

    def wrap_invoke_creator(self, original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        """A pool's `_invoke_creator()`, the driver's connect: a connection being opened."""
        started, ended = self.stats.opening_started, self.stats.opening_ended
        hook_failed = self.hook_failed

        def invoke_creator(record: Any) -> Any:
            try:
                started()
            except Exception as exc:
                hook_failed("connect", exc)
                return original(record)
            try:
                return original(record)
            finally:
                try:
                    ended()
                except Exception as exc:
                    hook_failed("connect", exc)

        invoke_creator.__wrapped__ = original  # type: ignore[attr-defined]
        return invoke_creator

    def wrap_queue_wait(self, queue: Any, original: Callable[..., bool]) -> Callable[..., bool]:
        """The `wait()` of a QueuePool queue's `not_empty` condition, which only a caller that
        found the queue empty runs: when it returns with a connection in the queue, that is
        the one the caller takes next (the queue's lock is held from here to its `_get()`)."""
        handed_over, hook_failed = self.tracker.handed_over, self.hook_failed

        def wait(timeout: float | None = None) -> bool:
            woken = original(timeout)
            try:
                items = queue.queue
                if items:
                    handed_over(items[-1] if queue.use_lifo else items[0])
            except Exception as exc:
                hook_failed("checkout", exc)
            return woken

        wait.__wrapped__ = original  # type: ignore[attr-defined]
        return wait

    def wrap_async_queue_get(self, queue: Any, original: Callable[[], Any]) -> Callable[[], Any]:
        """The `get()` of an AsyncAdaptedQueuePool's asyncio.Queue, which SQLAlchemy awaits
        only when no connection is idle (it takes an idle one with get_nowait()): what it
        returns is the connection the caller waited for."""
        handed_over, hook_failed = self.tracker.handed_over, self.hook_failed

        async def get() -> Any:
            # Checked, not assumed: a SQLAlchemy release that awaits get() without trying
            # get_nowait() first would come here with connections idle.
            empty = queue.empty()
            item = await original()
            if empty:
                try:
                    handed_over(item)
                except Exception as exc:
                    hook_failed("checkout", exc)
            return item

        get.__wrapped__ = original  # type: ignore[attr-defined]
        return get

    def _checkin_listener(self) -> Callable[[Any, Any], None]:
        checked_in = self.tracker.checked_in
        hook_failed = self.hook_failed
        follower = self.follower
        record_pool = RECORD_POOL

        def on_checkin(dbapi_connection: Any, record: Any) -> None:
            try:
                # Idle only with its connection (an invalidated one comes back without), and
                # only in the pool counted now: one out across dispose() returns to the old one.
                pool = follower.pool
                checked_in(
                    record,
                    dbapi_connection is not None and getattr(record, record_pool, pool) is pool,
                )
            except Exception as exc:
                hook_failed("checkin", exc)

        return on_checkin

    def _routed_checkin_listener(self, routes: Routes) -> Callable[[Any, Any], None]:
        """_checkin_listener's, also ending the checkout's route with its hold."""
        checked_in, ended = self.tracker.checked_in, routes.ended
        hook_failed = self.hook_failed
        follower = self.follower
        record_pool = RECORD_POOL

        def on_checkin(dbapi_connection: Any, record: Any) -> None:
            try:
                pool = follower.pool
                hold = checked_in(
                    record,
                    dbapi_connection is not None and getattr(record, record_pool, pool) is pool,
                )
                if hold is not None:
                    ended(record, hold)
            except Exception as exc:
                hook_failed("checkin", exc)

        return on_checkin

    # -- the other pool events --------------------------------------------------------------

    def _guarded(self, hook: str, body: Callable[..., None]) -> Callable[..., None]:
        hook_failed = self.hook_failed

        def listener(*args: Any) -> None:
            try:
                body(*args)
            except Exception as exc:
                hook_failed(hook, exc)

        return listener

    def _on_detach(self, dbapi_connection: Any, record: Any) -> None:
        hold = self.tracker.detached(record)
        if hold is not None and self.routes is not None:
            self.routes.ended(record, hold)

    def _on_connect(self, dbapi_connection: Any, record: Any) -> None:
        # A no-op for the pools recreate() made; a safety net for one made another way.
        self.follower.adopt(self.engine.pool)
        # The pool stamps starttime right before calling the driver, and this listener runs
        # first (insert=True), so the difference is the driver's connect time.
        started = getattr(record, "starttime", None)
        seconds = max(0.0, time.time() - started) if started else 0.0
        self.stats.connected(seconds)

    def _after_connect(self, dbapi_connection: Any, record: Any) -> None:
        if not self.stats.isolation:
            self._read_isolation_level()

    def _read_isolation_level(self) -> bool:
        """Give the stats the engine's isolation level, if known now; whether it is."""
        level = isolation_level(self.engine).upper()
        if level not in ISOLATION_LEVELS:
            return False  # not known yet, or a level no dialect of SQLAlchemy's names
        self.stats.isolation_known(ISOLATION_LEVELS.index(level) + 1)
        return True

    def _on_close(self, dbapi_connection: Any, record: Any) -> None:
        pool = self.follower.pool
        reason = pooled_close_reason(record)
        self.tracker.closed(record, getattr(record, RECORD_POOL, pool) is pool, reason)

    def _on_close_detached(self, dbapi_connection: Any) -> None:
        self.stats.closed(False, detached_close_reason())

    def _on_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        self.stats.invalidated(soft=False)

    def _on_soft_invalidate(self, dbapi_connection: Any, record: Any, exception: Any) -> None:
        self.stats.invalidated(soft=True)
