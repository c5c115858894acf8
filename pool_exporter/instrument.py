"""`instrument()`: set up, name and take down the instrumentation of one engine.

The work is done in rooms of its own: hooks.py (the checkout wrapper and the pool event
listeners, and how a failure in them is handled), checkouts.py (the checkouts still out),
follow.py (the engine's pool through `dispose()`) and fork.py (a forked child's reset).
docs/internals.md explains how the numbers stay exact, each point with its test.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from pathlib import PurePath
from typing import Any

from prometheus_client import REGISTRY
from prometheus_client.registry import CollectorRegistry
from sqlalchemy.engine import Engine
from sqlalchemy.pool import Pool, QueuePool

from . import fork, multiprocess, uwsgi_fork
from .checkouts import Checkout, new_tracker
from .collector import PoolSource, collector_for
from .exemplars import Exemplars
from .follow import PoolFollower
from .hooks import HookErrors, Hooks
from .routes import DEFAULT_MAX_ROUTES, MAX_ROUTES, TRACKED_PER_SERIES, Routes, new_routes
from .stats import PoolStats, new_stats

_handles: weakref.WeakKeyDictionary[Engine, PoolInstrumentation] = weakref.WeakKeyDictionary()
_handles_lock = threading.RLock()
fork.hold_across_fork(_handles_lock)


def instrument(
    engine: Any,
    *,
    name: str | None = None,
    registry: CollectorRegistry | None = None,
    dispose_on_fork: bool = False,
    long_checkout_threshold: float | None = None,
    route: Callable[[], str | None] | None = None,
    max_routes: int = DEFAULT_MAX_ROUTES,
) -> PoolInstrumentation:
    """Export the pool metrics of `engine` (an `Engine` or `AsyncEngine`).

    `name` is the `pool` label; by default it is derived from the URL's dialect and database,
    never its user, password or host. `registry` defaults to prometheus-client's global one.
    With `dispose_on_fork`, a forked child calls `engine.dispose(close=False)` so it never
    shares its parent's sockets (SQLAlchemy's advice for multiprocessing).

    With `long_checkout_threshold` (seconds), a connection held longer is counted once in
    `sqlalchemy_pool_long_checkouts_total` and logged at WARNING with where it was borrowed,
    then at INFO when it comes back; the borrow site is captured at every checkout.

    With `route`, a function of no arguments returning a short string or None (the web route,
    Celery task or job current at checkout), checkouts, connection-seconds held and waited
    checkouts are also counted by route: `route()` is called once per checkout. The
    `max_routes` busiest routes by connection-seconds get series of their own, the rest are
    counted as `route="(other)"`. A `route()` that raises is counted as a hook error.

    Calling it again for the same engine returns the existing handle.
    """
    sync_engine = _sync_engine(engine)
    if name is not None and (not isinstance(name, str) or not name):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    threshold = _threshold(long_checkout_threshold)
    if route is not None and not callable(route):
        raise TypeError(f"route must be a function of no arguments, got {route!r}")
    if (
        isinstance(max_routes, bool)
        or not isinstance(max_routes, int)
        or not 1 <= max_routes <= MAX_ROUTES
    ):
        raise ValueError(
            f"max_routes must be a whole number from 1 to {MAX_ROUTES}, got {max_routes!r}"
        )
    with _handles_lock:
        uwsgi_fork.follow_uwsgi()
        # A child forked from C that was not reset yet must not hand out its parent's handle.
        fork.reset_if_forked()
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
            if route is not None and (route, max_routes) != (existing.route, existing.max_routes):
                raise ValueError(
                    "engine is already instrumented with another route= or max_routes; call "
                    ".uninstrument() on that handle first"
                )
            return existing
        handle = PoolInstrumentation(
            sync_engine,
            name=name,
            registry=REGISTRY if registry is None else registry,
            dispose_on_fork=dispose_on_fork,
            long_checkout_threshold=threshold,
            route=route,
            max_routes=max_routes,
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


def _flag(value: object) -> str:
    return "true" if value else "false"


def pool_info(engine: Engine) -> dict[str, str]:
    """The `sqlalchemy_pool_info` labels of the engine's pool: what it is, and the settings a
    dispose() carries over to the next pool. A setting the pool does not have (use_lifo
    outside queue pools) is left out rather than given a value. The isolation level, known
    only once the dialect has connected unless the engine sets one, comes from the stats
    (collector.info_labels)."""
    pool = engine.pool
    info = {"pool_class": type(pool).__name__, **_dialect_info(engine)}
    info["pre_ping"] = _flag(_read(pool, "_pre_ping"))
    reset = _text(_read(_read(pool, "_reset_on_return"), "name"))  # ResetStyle.reset_rollback
    if reset:
        info["reset_on_return"] = reset.removeprefix("reset_")
    if isinstance(pool, QueuePool):
        info["use_lifo"] = _flag(_read(_read(pool, "_pool"), "use_lifo"))
    return info


class PoolInstrumentation:
    """The handle `instrument()` returns: the pool's name, its stats, `checkouts()` and
    `uninstrument()`.

    It sets up and takes down the rooms that do the work: `hooks` (hooks.py: the checkout
    wrapper and the pool event listeners), `tracker` (checkouts.py: the checkouts still out),
    `follower` (follow.py: the pool through `dispose()`), `hook_failed` (hooks.py: a failure
    inside any of them), `exemplars` (exemplars.py: the traces of checkouts that waited, while
    pool_exporter.otel has them on); in a forked child, `reset_after_fork()` starts them again.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        name: str | None,
        registry: CollectorRegistry,
        dispose_on_fork: bool,
        long_checkout_threshold: float | None = None,
        route: Callable[[], str | None] | None = None,
        max_routes: int = DEFAULT_MAX_ROUTES,
    ) -> None:
        self.engine = engine
        self.long_checkout_threshold = long_checkout_threshold
        self.route = route
        self.max_routes = max_routes
        self.registry = registry
        self.dispose_on_fork = dispose_on_fork
        self._collector = collector_for(registry)
        self.name = name if name is not None else self._free_name(default_name(engine))
        info = pool_info(engine)
        self.stats = _new_stats(self.name, info, TRACKED_PER_SERIES * max_routes if route else 0)
        self.hook_failed = HookErrors(self.name, self.stats)
        self.exemplars = _new_exemplars(self.name, self.stats, self.hook_failed)
        self.tracker = new_tracker(
            self.name, self.stats, long_checkout_threshold, self.hook_failed, self.exemplars
        )
        self.routes = _new_routes(route, max_routes, self.hook_failed, self.stats)
        self.follower = PoolFollower(self.stats, self.hook_failed)
        self.hooks = Hooks(
            engine,
            self.stats,
            self.tracker,
            self.follower,
            self.hook_failed,
            routes=self.routes,
        )
        self.follower.start(engine.pool, self.hooks)
        self._collector.add(PoolSource(self.name, self.stats, info, self.routes, self.exemplars))
        self.hooks.listen()
        fork.register(self)
        self.active = True
        self.tracker.watch()

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
            self.hooks.remove()
            self.follower.stop()
            self.tracker.stop()
            self._collector.remove(self.name)
            self.stats.retire()
            fork.unregister(self)
            if _handles.get(self.engine) is self:
                del _handles[self.engine]

    def reset_after_fork(self) -> None:
        """Start again as a forked child's own (fork.py calls it): nothing counted, nothing
        out (a new marker key: the parent's markers on inherited connections mean nothing), no
        routes, no exemplar of the parent's traces, the next hook failure logged in full, a
        stats file of this process's own in multiprocess mode; with `dispose_on_fork`,
        `engine.dispose(close=False)`, SQLAlchemy's advice."""
        self.tracker.forget()
        self.hook_failed.forget()
        # The routes first: the stats' reset writes them, empty, into the child's new file.
        if self.routes is not None:
            self.routes.forget()
        self.stats.reset()
        self.exemplars.forget()
        if self.dispose_on_fork:
            self.engine.dispose(close=False)

    def checkouts(self) -> list[Checkout]:
        """The connections out of the pool now, oldest first: age and, with a threshold set,
        where and by which thread or task they were borrowed. Never SQL or parameters."""
        return self.tracker.checkouts()


def active_handles() -> list[PoolInstrumentation]:
    """Every pool of this process instrumented now, by name: what `current_checkouts()` and
    pool_exporter.otel read."""
    with _handles_lock:
        handles = sorted(_handles.values(), key=lambda h: h.name)
    return [h for h in handles if h.active]


def current_checkouts() -> dict[str, list[Checkout]]:
    """Every instrumented pool of this process: the connections out now (`checkouts()`)."""
    return {h.name: h.checkouts() for h in active_handles()}


def _new_stats(name: str, info: dict[str, str], route_entries: int) -> PoolStats:
    directory = multiprocess.directory()
    if directory is not None:
        from pool_exporter.multiprocess import store

        return store.new_stats(name, info, directory, route_entries)
    return new_stats()


def _new_exemplars(name: str, stats: PoolStats, hook_failed: HookErrors) -> Exemplars:
    """The pool's exemplars; in multiprocess mode also kept in a file beside its stats file,
    for the sidecar."""
    if multiprocess.directory() is not None:
        from pool_exporter.multiprocess.exemplarfile import FileExemplars
        from pool_exporter.multiprocess.store import MultiprocessPoolStats

        if isinstance(stats, MultiprocessPoolStats):
            return FileExemplars(name, hook_failed, stats)
    return Exemplars(name, hook_failed)


def _new_routes(
    route: Callable[[], str | None] | None,
    max_routes: int,
    hook_failed: HookErrors,
    stats: PoolStats,
) -> Routes | None:
    """The pool's counts by route, if it counts them: in its stats file in multiprocess
    mode."""
    if route is None:
        return None
    from pool_exporter.multiprocess.store import MultiprocessPoolStats

    if isinstance(stats, MultiprocessPoolStats):
        from pool_exporter.multiprocess.routestore import new_stored_routes

        return new_stored_routes(route, max_routes, hook_failed, stats)
    return new_routes(route, max_routes, hook_failed)
