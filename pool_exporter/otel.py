"""OpenTelemetry: every instrumented pool's counts as observable instruments of a MeterProvider.

`enable()` registers the `db.client.connection.*` instruments of the semantic conventions
(SEMCONV_VERSION) with a MeterProvider. Each is read by a callback when the provider collects,
from the same PoolStats the Prometheus collector reads, so the checkout path does no work for
them. The three histograms of the conventions are not here: the Python SDK can only record
them one observation at a time, on the checkout path (docs/opentelemetry.md has the figures
and what to do instead).

Needs the `otel` extra (opentelemetry-api); `import pool_exporter` never imports this module.
"""

from __future__ import annotations

import logging
import math
import threading
import traceback
import weakref
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

try:
    from opentelemetry import metrics as api
except ImportError:  # the extra is missing: one line that says which to install
    raise ImportError(
        "pool_exporter.otel needs OpenTelemetry's API: pip install 'pool-exporter[otel]'"
    ) from None

from . import fork
from . import metrics as m
from .instrument import active_handles
from .release import installed_version

if TYPE_CHECKING:
    from .stats import PoolStats

log = logging.getLogger("pool_exporter")

# The conventions for connection pools are at development stability and keep moving
# (semantic-conventions #2982 proposes renaming them again): these names are those of
# release 1.44.0, the newest one the Python semantic-conventions package ships. The
# instrumentation scope carries the matching schema URL.
SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
SCOPE = "pool_exporter"
POOL_NAME = "db.client.connection.pool.name"
STATE = "db.client.connection.state"
# db.client.connection.state's values, and the `state` label of sqlalchemy_pool_connections
# that counts the same connections.
PROMETHEUS_STATE = {"used": "in_use", "idle": "idle"}

Row = tuple[int, dict[str, str]]  # a value and its attributes beyond the pool name


@dataclass(frozen=True)
class Instrument:
    """One instrument of the conventions, and how it is read from a pool's stats."""

    name: str
    kind: Literal["updowncounter", "counter"]
    unit: str
    description: str
    # The Prometheus metric (metrics.py) that carries the same number, if one does.
    prometheus: m.Metric | None
    read: Callable[[PoolStats], list[Row]]


def _count(s: PoolStats) -> list[Row]:
    return [(s.in_use, {STATE: "used"}), (s.idle, {STATE: "idle"})]


def _max(s: PoolStats) -> list[Row]:
    # Undefined for pools without capacity and unbounded for pool_size=0 or max_overflow=-1:
    # left out rather than a made-up number (the Prometheus gauge says +Inf, which an
    # integer UpDownCounter cannot).
    cap = s.capacity
    if cap is None or math.isinf(cap.max_connections):
        return []
    return [(int(cap.max_connections), {})]


def _idle_max(s: PoolStats) -> list[Row]:
    # QueuePool keeps at most pool_size connections idle (it closes overflow ones at
    # checkin); pool_size=0 means no limit.
    cap = s.capacity
    return [] if cap is None or cap.size == 0 else [(cap.size, {})]


def _idle_min(s: PoolStats) -> list[Row]:
    # QueuePool opens connections only when asked and keeps no minimum idle: 0 is its
    # configuration, not a default filled in.
    return [] if s.capacity is None else [(0, {})]


INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument(
        "db.client.connection.count",
        "updowncounter",
        "{connection}",
        "The number of connections that are currently in state described by the `state` attribute.",
        m.CONNECTIONS,
        _count,
    ),
    Instrument(
        "db.client.connection.idle.max",
        "updowncounter",
        "{connection}",
        "The maximum number of idle open connections allowed.",
        m.SIZE,
        _idle_max,
    ),
    Instrument(
        "db.client.connection.idle.min",
        "updowncounter",
        "{connection}",
        "The minimum number of idle open connections allowed.",
        None,  # QueuePool has no such setting (see _idle_min)
        _idle_min,
    ),
    Instrument(
        "db.client.connection.max",
        "updowncounter",
        "{connection}",
        "The maximum number of open connections allowed.",
        m.MAX_CONNECTIONS,
        _max,
    ),
    Instrument(
        "db.client.connection.pending_requests",
        "updowncounter",
        "{request}",
        "The number of current pending requests for an open connection.",
        m.WAITING,
        lambda s: [(s.waiting, {})],
    ),
    Instrument(
        "db.client.connection.timeouts",
        "counter",
        "{timeout}",
        "The number of connection timeouts that have occurred trying to obtain a connection "
        "from the pool.",
        m.CHECKOUT_TIMEOUTS,
        lambda s: [(s.timeouts, {})],
    ),
)


class Enabled:
    """What `enable()` returns: the provider, the meter, and the instruments by name."""

    def __init__(self, meter_provider: api.MeterProvider) -> None:
        self.meter_provider = meter_provider
        self.meter = meter_provider.get_meter(
            SCOPE, installed_version() or "unknown", schema_url=SCHEMA_URL
        )
        self.instruments: dict[str, api.Asynchronous] = {
            spec.name: _create(self.meter, spec) for spec in INSTRUMENTS
        }

    def __repr__(self) -> str:
        return f"<pool_exporter.otel.Enabled {type(self.meter_provider).__name__}>"


_enabled: weakref.WeakKeyDictionary[api.MeterProvider, Enabled] = weakref.WeakKeyDictionary()
_enabled_lock = threading.RLock()
fork.hold_across_fork(_enabled_lock)


def enable(meter_provider: api.MeterProvider | None = None) -> Enabled:
    """Report every pool `instrument()` covers in this process, now and later, to
    `meter_provider` (by default the global one, `opentelemetry.metrics.get_meter_provider()`).

    The instruments are observable: the provider's readers call them when they collect, and
    each reads the pool's counts then. A pool instrumented later shows up at the next
    collection; an uninstrumented one is gone from it. In multiprocess mode each process
    reports its own pools. Calling it again with the same provider returns the same object.
    """
    if meter_provider is None:
        provider = api.get_meter_provider()
    elif isinstance(meter_provider, api.MeterProvider):
        provider = meter_provider
    else:
        raise TypeError(
            "enable() takes an opentelemetry.metrics.MeterProvider or None (the global one), "
            f"got {type(meter_provider).__module__}.{type(meter_provider).__qualname__}"
            f"{_hint(meter_provider)}"
        )
    with _enabled_lock:
        existing = _enabled.get(provider)
        if existing is None:
            existing = _enabled[provider] = Enabled(provider)
        return existing


def _hint(value: object) -> str:
    if isinstance(value, api.Meter):
        return " (pass the MeterProvider the meter came from)"
    if callable(getattr(value, "collect", None)):  # a MetricReader
        return " (pass a MeterProvider(metric_readers=[reader]))"
    return ""


def _create(meter: api.Meter, spec: Instrument) -> api.Asynchronous:
    def observe(options: api.CallbackOptions) -> Iterable[api.Observation]:
        return list(_observations(spec))

    create = (
        meter.create_observable_counter
        if spec.kind == "counter"
        else meter.create_observable_up_down_counter
    )
    return create(spec.name, callbacks=[observe], unit=spec.unit, description=spec.description)


def _observations(spec: Instrument) -> Iterator[api.Observation]:
    seen: set[str] = set()
    for handle in active_handles():
        name = handle.name
        if name in seen:
            # Names are unique per prometheus-client registry; the conventions want them
            # unique in the application, and two pools under one attribute set would be
            # read as one.
            _report_once(name, "duplicate", None)
            continue
        seen.add(name)
        try:
            rows = spec.read(handle.stats.snapshot())
        except Exception as exc:  # a broken pool must not hide the others
            _report_once(name, "read", exc)
            continue
        for value, attributes in rows:
            yield api.Observation(value, {POOL_NAME: name, **attributes})


_reported: set[tuple[str, str]] = set()


def _report_once(pool: str, what: str, exc: Exception | None) -> None:
    """Log a pool left out of a collection: the first time in full, then at debug level
    (each instrument reads every pool, so one broken pool fails them all alike)."""
    first = (pool, what) not in _reported
    _reported.add((pool, what))
    level = logging.WARNING if first else logging.DEBUG
    if exc is None:
        log.log(
            level,
            "pool-exporter: two instrumented pools are both named %r (in different "
            "registries); OpenTelemetry gets the first only: give them distinct name=",
            pool,
        )
        return
    log.log(
        level,
        "pool-exporter: reading pool %r failed, left out of OpenTelemetry's collection: %s: %s\n%s",
        pool,
        type(exc).__name__,
        exc,
        "".join(traceback.format_exception(exc, chain=False)) if first else "",
    )
