"""Exemplars: per pool and histogram bucket, the trace of the latest checkout that waited
there (or the latest long hold), and the process-wide switch that turns them on.

Nothing here knows OpenTelemetry. `pool_exporter.otel.enable_exemplars()` sets a `Recorder`
in `TRACING`, which reads the current span when asked to; until then (and without the `otel`
extra, which nothing else imports) `TRACING.recorder` is None and `TRACING.min_wait` +inf,
and no span context is ever read.

- Only the two paths a checkout that found an idle connection never takes ask for it: the
  tracker's waited path (checkouts.py: the caller found no idle connection, as
  `sqlalchemy_pool_waited_checkouts_total` counts) calls `Exemplars.waited` for a wait longer
  than `TRACING.min_wait`, and a failed checkout (a timeout, a cancellation, an error) calls
  `Exemplars.failed` (hooks.py). The recorder adds an event to the current span and, for a
  sampled one, records an exemplar here, on the wait histogram's series of the outcome.
- With `long_checkout_threshold`, the recorder's `capture()` takes the span current at each
  checkout (LongCheckoutTracker keeps it with the borrow site) and a hold past the threshold
  records it on the hold histogram: the trace that borrowed the connection, even when it comes
  back outside any span.

Each bucket keeps its latest exemplar, as prometheus-client's own histograms do. A failure in
any of this is counted under the checkout's (or checkin's) hook and logged, never raised.
"""

from __future__ import annotations

import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple, Protocol

from prometheus_client.samples import Exemplar

from . import metrics, stats

# How a checkout ended, as the wait histogram's `outcome` label and the span event say; from
# the reasons PoolStats counts failures by.
OUTCOMES: dict[str, str] = {
    stats.TIMEOUT: metrics.TIMED_OUT,
    stats.CANCELLED: metrics.CANCELLED,
    stats.CONNECT_ERROR: metrics.FAILED,
    stats.ERROR: metrics.FAILED,
}

# The histograms an exemplar can annotate, by the name of the PoolStats field that counts
# them (a multiprocess exemplar file maps its records by these names too), and their bounds:
# the wait's series of each outcome (the collector serves each outcome's from its field
# here), and the hold.
WAIT_SERIES: dict[str, str] = {
    metrics.SUCCESS: "wait",
    metrics.TIMED_OUT: "wait_timeout",
    metrics.CANCELLED: "wait_cancelled",
    metrics.FAILED: "wait_error",
}
HOLD = "hold"
BOUNDS: dict[str, tuple[float, ...]] = {
    **dict.fromkeys(WAIT_SERIES.values(), metrics.WAIT_BUCKETS),
    HOLD: metrics.HOLD_BUCKETS,
}

# The exemplar's labels: OpenTelemetry's ids in the W3C trace-context hex form, which Grafana
# and Tempo look up.
TRACE_ID = "trace_id"
SPAN_ID = "span_id"


class Trace(NamedTuple):
    """A sampled span's ids, as integers (OpenTelemetry's SpanContext holds them so)."""

    trace_id: int
    span_id: int


class Traced(NamedTuple):
    """One exemplar: the span's ids, the value observed and when (Unix time)."""

    trace_id: int
    span_id: int
    value: float
    timestamp: float

    def exemplar(self) -> Exemplar:
        """As prometheus-client's OpenMetrics exposition writes it."""
        labels = {TRACE_ID: f"{self.trace_id:032x}", SPAN_ID: f"{self.span_id:016x}"}
        return Exemplar(labels, self.value, self.timestamp)


def valid(traced: Traced, bounds: Sequence[float], bucket: int) -> bool:
    """Whether `traced` could have been recorded in `bucket` of a histogram of `bounds`: ids
    OpenTelemetry calls valid, a finite wait or hold in that bucket, a finite time. A reader
    of a file someone else wrote checks each record so."""
    return (
        0 < traced.trace_id < 1 << 128
        and 0 < traced.span_id < 1 << 64
        and math.isfinite(traced.value)
        and traced.value >= 0
        and bisect_left(bounds, traced.value) == bucket
        and math.isfinite(traced.timestamp)
        and traced.timestamp > 0
    )


Latest = dict[str, list[Traced | None]]
"""Per histogram (BOUNDS' names: each outcome's wait, and the hold), per bucket (+Inf's
last), the latest exemplar or None."""


def empty() -> Latest:
    return {series: [None] * (len(bounds) + 1) for series, bounds in BOUNDS.items()}


Entries = tuple[tuple[str, int, Traced], ...]
"""The exemplars of one pool as (histogram, bucket, exemplar), only the buckets that have one:
what a reader keeps of each worker's exemplar file (few buckets have one)."""


def newest(found: Iterable[Entries]) -> Latest:
    """Per histogram and bucket, the newest exemplar of any of `found` (several workers')."""
    out = empty()
    for entries in found:
        for series, bucket, traced in entries:
            slots = out[series]
            mine = slots[bucket]
            if mine is None or traced.timestamp > mine.timestamp:
                slots[bucket] = traced
    return out


class Recorder(Protocol):
    """What pool_exporter.otel sets in TRACING: how the current span is read."""

    def checkout(self, exemplars: Exemplars, wait: float, outcome: str) -> None:
        """A checkout waited `wait` seconds and ended with `outcome`: tell the current span,
        and record an exemplar in `exemplars` for a sampled one."""

    def capture(self) -> Trace | None:
        """The current span's ids if it is sampled, else None."""


class Tracing:
    """The process-wide switch. `min_wait` is what the checkout path compares each wait with:
    +inf while no recorder is set, so that comparison is false and nothing else runs."""

    def __init__(self) -> None:
        self.min_wait = math.inf
        self.recorder: Recorder | None = None
        self._lock = threading.Lock()

    def on(self, recorder: Recorder, min_wait: float) -> None:
        with self._lock:
            self.recorder = recorder  # before min_wait: a checkout past it finds the recorder
            self.min_wait = min_wait

    def off(self) -> None:
        with self._lock:
            self.min_wait = math.inf
            self.recorder = None


TRACING = Tracing()


class Exemplars:
    """One pool's exemplars in this process, and its way into the recorder.

    Every method is guarded: `hook_failed` counts and logs a failure under the hook it names.
    The latest exemplar of each bucket is one list item, replaced whole, so a scrape on
    another thread reads one exemplar or the one before, never half of each.
    """

    def __init__(self, pool: str, hook_failed: Callable[[str, BaseException], None]) -> None:
        self.pool = pool
        self.hook_failed = hook_failed
        self.latest = empty()

    # -- what the checkout path calls: only a checkout that waited, or failed ---------------

    def waited(self, wait: float) -> None:
        """A checkout that found no idle connection succeeded after waiting `wait` seconds,
        more than TRACING.min_wait."""
        recorder = TRACING.recorder
        if recorder is None:  # switched off since the caller compared
            return
        try:
            recorder.checkout(self, wait, metrics.SUCCESS)
        except Exception as exc:
            self.hook_failed("checkout", exc)

    def failed(self, reason: str, wait: float) -> None:
        """A checkout failed for `reason` (PoolStats') after waiting `wait` seconds: whatever
        it waited, the span hears of it (a failure is rare, and the trace of a timeout is the
        one most worth having)."""
        recorder = TRACING.recorder
        if recorder is None:
            return
        try:
            recorder.checkout(self, wait, OUTCOMES.get(reason, metrics.FAILED))
        except Exception as exc:
            self.hook_failed("checkout", exc)

    def capture(self) -> Trace | None:
        """The current span's ids, for a checkout whose hold may turn out long; None while
        exemplars are off."""
        recorder = TRACING.recorder
        if recorder is None:
            return None
        try:
            return recorder.capture()
        except Exception as exc:
            self.hook_failed("checkout", exc)
            return None

    def held(self, hold: float, trace: Trace) -> None:
        """A connection borrowed inside the span `trace` came back after `hold` seconds, past
        the long-checkout threshold."""
        try:
            self.record(HOLD, hold, trace.trace_id, trace.span_id)
        except Exception as exc:
            self.hook_failed("checkin", exc)

    # -- what the recorder calls -------------------------------------------------------------

    def record(self, series: str, value: float, trace_id: int, span_id: int) -> None:
        """Make (trace_id, span_id) the latest exemplar of `value`'s bucket of `series`."""
        bucket = bisect_left(BOUNDS[series], value)
        traced = Traced(trace_id, span_id, value, time.time())
        self.latest[series][bucket] = traced
        self.stored(series, bucket, traced)

    def stored(self, series: str, bucket: int, traced: Traced) -> None:
        """Where a variant keeps an exemplar beyond this process (multiprocess mode's file)."""

    # -- reading, and a forked child's start ---------------------------------------------------

    def snapshot(self) -> Latest:
        return {series: list(slots) for series, slots in self.latest.items()}

    def forget(self) -> None:
        """Start with none (a forked child: its parent's traces are not its own)."""
        self.latest = empty()
