"""OpenTelemetry: every instrumented pool's counts in a MeterProvider, and the pool's waits on
the traces that suffered them.

`enable()` registers the `db.client.connection.*` instruments of the semantic conventions
(SEMCONV_VERSION) with a MeterProvider. Each is read by a callback when the provider collects,
from the same PoolStats the Prometheus collector reads, so the checkout path does no work for
them. The three histograms of the conventions are not here: the Python SDK can only record
them one observation at a time, on the checkout path (docs/opentelemetry.md has the figures
and what to do instead).

`enable_exemplars()` sets the recorder of exemplars.py: a checkout that waited (found no idle
connection) or failed adds an event to the current span, and a sampled span's ids become the
exemplar of the wait histogram's bucket of its outcome (and of the hold histogram's, for a
hold past long_checkout_threshold). A checkout that found an idle connection reads no span.

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
    from opentelemetry import trace
except ImportError:  # the extra is missing: one line that says which to install
    raise ImportError(
        "pool_exporter.otel needs OpenTelemetry's API: pip install 'pool-exporter[otel]'"
    ) from None

from . import exemplars, fork
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


# -- the wait on the trace: exemplars and span events ------------------------------------------

# The event a checkout that waited (or failed) adds to the current span, and its attributes
# beyond the pool's name (the conventions have none for a pool wait: these are ours).
EVENT = "pool_exporter.checkout_wait"
WAIT_SECONDS = "pool_exporter.wait_seconds"
OUTCOME = "pool_exporter.outcome"


class SpanRecorder:
    """What `enable_exemplars()` sets in exemplars.TRACING: reads the current span for a
    checkout that waited or failed, adds the event to a recording one, and records a sampled
    one's ids as the exemplar."""

    def __init__(self, span_events: bool) -> None:
        self.span_events = span_events

    def checkout(self, found: exemplars.Exemplars, wait: float, outcome: str) -> None:
        span = trace.get_current_span()
        context = span.get_span_context()
        if not context.is_valid:  # no span: nothing to tie the wait to
            return
        if self.span_events and span.is_recording():
            span.add_event(EVENT, {POOL_NAME: found.pool, WAIT_SECONDS: wait, OUTCOME: outcome})
        series = exemplars.WAIT_SERIES.get(outcome)
        # An unsampled trace is never stored: an exemplar linking to it would link nowhere.
        if series is not None and context.trace_flags.sampled:
            found.record(series, wait, context.trace_id, context.span_id)

    def capture(self) -> exemplars.Trace | None:
        context = trace.get_current_span().get_span_context()
        if context.is_valid and context.trace_flags.sampled:
            return exemplars.Trace(context.trace_id, context.span_id)
        return None


def enable_exemplars(*, span_events: bool = True, min_wait: float | None = None) -> None:
    """Tie the pools' waits to the traces that suffered them, in every pool `instrument()`
    covers in this process, now and later.

    A checkout that found no idle connection (one `sqlalchemy_pool_waited_checkouts_total`
    counts) and waited longer than `min_wait` seconds (by default the wait histogram's first
    bound, 1 ms), or that failed (a timeout, a cancellation, an error), reads the current
    OpenTelemetry span: with `span_events`, a recording span gets the event EVENT (the pool,
    the wait, the outcome), and a sampled span's `trace_id` and `span_id` become the exemplar
    of the wait's bucket of `sqlalchemy_pool_checkout_wait_seconds`, on its outcome's series.
    With `long_checkout_threshold`, a hold past it gets the exemplar of the span that borrowed
    the connection on `sqlalchemy_pool_connection_hold_seconds`. Exemplars appear in the
    OpenMetrics exposition, in process and through the sidecar. A checkout that found an
    idle connection reads no span; `disable_exemplars()` turns it all off again.
    """
    if not isinstance(span_events, bool):
        raise TypeError(f"span_events must be True or False, got {span_events!r}")
    if min_wait is None:
        min_wait = m.WAIT_BUCKETS[0]
    elif (
        isinstance(min_wait, bool)
        or not isinstance(min_wait, int | float)
        or not 0 <= min_wait < float("inf")
    ):
        raise ValueError(f"min_wait must be a number of seconds, 0 or more, got {min_wait!r}")
    exemplars.TRACING.on(SpanRecorder(span_events), float(min_wait))


def disable_exemplars() -> None:
    """Stop reading spans for checkouts; the exemplars recorded so far stay until replaced."""
    exemplars.TRACING.off()
