"""The wait on the trace: a checkout that waited inside an OpenTelemetry span puts the span's
ids on its bucket of the wait histogram (OpenMetrics, in process and through the sidecar) and
an event on the span; a long hold puts the borrowing span on the hold histogram. A checkout
that did not wait reads no span, and without a span or with exemplars off nothing changes.
Real pools (SQLite files, aiosqlite), a real SDK TracerProvider with an in-memory exporter,
real worker processes and a real sidecar."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from bisect import bisect_left
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest
import sqlalchemy as sa
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics import exposition as openmetrics_exposition
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse
from prometheus_client.samples import Exemplar
from sqlalchemy.ext.asyncio import create_async_engine

import pool_exporter
from pool_exporter import exemplars, otel
from pool_exporter import metrics as m
from pool_exporter.incident.promserver import PrometheusServer
from pool_exporter.instrument import PoolInstrumentation
from pool_exporter.multiprocess import exemplarfile, filenames
from pool_exporter.multiprocess.reader import WorkersCollector
from pool_exporter.rendered import Exposed, encode
from tests.support.binaries import require_binary
from tests.support.exposition import value
from tests.support.forking import in_child

from .support.procs import ROOT, Procs, procs, start_sidecar, total, wait_until
from .support.workers import kill9, scrape_within

__all__ = ["procs"]

OPENMETRICS = "application/openmetrics-text; version=1.0.0"
WAIT = m.CHECKOUT_WAIT.name
HOLD = m.HOLD.name


@dataclass
class Traces:
    """A real SDK TracerProvider's tracer, and the spans it finished."""

    tracer: trace.Tracer
    exporter: InMemorySpanExporter

    def finished(self) -> tuple[ReadableSpan, ...]:
        return self.exporter.get_finished_spans()


def traces(**provider_options: Any) -> tuple[Traces, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(**provider_options)  # samples every trace by default
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Traces(provider.get_tracer("test_exemplars"), exporter), provider


@pytest.fixture
def traced() -> Iterator[Traces]:
    """Exemplars on, and a tracer whose spans the test reads back; off again at the end."""
    found, provider = traces()
    otel.enable_exemplars()
    yield found
    otel.disable_exemplars()
    provider.shutdown()


@pytest.fixture
def pool(registry: CollectorRegistry, sqlite_url: str) -> Iterator[PoolInstrumentation]:
    """A QueuePool of one connection on a SQLite file, instrumented as pool `one`."""
    engine = sa.create_engine(sqlite_url, pool_size=1, max_overflow=0, pool_timeout=5)
    handle = pool_exporter.instrument(engine, name="one", registry=registry)
    with engine.connect():  # opened before any test checks out: no wait for a new connection
        pass
    yield handle
    handle.uninstrument()
    engine.dispose()


def wait_in(
    handle: PoolInstrumentation, hold: float, around: Callable[[], AbstractContextManager[Any]]
) -> None:
    """Check out inside `around()` while another thread holds the pool's only connection,
    which it gives back `hold` seconds after the pool counts this caller waiting."""
    engine = handle.engine
    taken, waiting = threading.Event(), threading.Event()

    def holder() -> None:
        with engine.connect():
            taken.set()
            assert waiting.wait(10)
            time.sleep(hold)  # the wait the caller is to have, from the moment it waits

    def watch() -> None:
        deadline = time.monotonic() + 10
        while handle.stats.waiting < 1 and time.monotonic() < deadline:
            time.sleep(0.001)
        waiting.set()

    threads = [threading.Thread(target=holder), threading.Thread(target=watch)]
    threads[0].start()
    assert taken.wait(10)
    threads[1].start()
    try:
        with around(), engine.connect():
            pass
    finally:
        waiting.set()
        for thread in threads:
            thread.join()


def served(registry: CollectorRegistry, accept: str = OPENMETRICS) -> str:
    """What pool_exporter.make_wsgi_app serves for `accept` (prometheus-client's negotiation)."""
    app = pool_exporter.make_wsgi_app(registry)
    environ: dict[str, Any] = {"HTTP_ACCEPT": accept}
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers: status.append(s)))
    assert status == ["200 OK"]
    return body.decode()


def bucket_exemplars(text: str, family: str, **labels: str) -> dict[str, Exemplar]:
    """The exemplar of each bucket of one histogram series, by `le`, from OpenMetrics text."""
    found = {}
    for f in om_parse(text):
        for s in f.samples:
            if s.name == family + "_bucket" and labels.items() <= s.labels.items() and s.exemplar:
                found[s.labels["le"]] = s.exemplar
    return found


def bucket_of(seconds: float, bounds: tuple[float, ...]) -> str:
    """The `le` of the bucket a value is counted in (a value on a bound is in that bucket)."""
    i = bisect_left(bounds, seconds)
    return "+Inf" if i == len(bounds) else repr(float(bounds[i]))


def ids(span: trace.Span | ReadableSpan) -> dict[str, str]:
    context = span.get_span_context()
    assert context is not None
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


def events(spans: tuple[ReadableSpan, ...]) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for s in spans for e in s.events if e.name == otel.EVENT]


# -- in process ------------------------------------------------------------------------------


def test_a_checkout_that_waits_inside_a_span_puts_its_trace_on_its_wait_bucket(
    traced: Traces, pool: PoolInstrumentation, registry: CollectorRegistry
) -> None:
    spans: list[trace.Span] = []

    @contextlib.contextmanager
    def request() -> Iterator[None]:
        with traced.tracer.start_as_current_span("request") as span:
            spans.append(span)
            yield

    wait_in(pool, 0.05, request)
    (event,) = events(traced.finished())
    wait = event[otel.WAIT_SECONDS]
    found = bucket_exemplars(served(registry), WAIT, pool="one")
    assert list(found) == [bucket_of(wait, m.WAIT_BUCKETS)]
    (exemplar,) = found.values()
    assert exemplar.labels == ids(spans[0])
    assert exemplar.value == wait >= 0.05
    assert time.time() - 60 < float(exemplar.timestamp or 0) <= time.time()


def test_the_waited_checkout_adds_the_pool_the_wait_and_the_outcome_to_its_span(
    traced: Traces, pool: PoolInstrumentation, registry: CollectorRegistry
) -> None:
    wait_in(pool, 0.05, lambda: traced.tracer.start_as_current_span("request"))
    (span,) = traced.finished()
    (event,) = span.events
    assert event.name == otel.EVENT == "pool_exporter.checkout_wait"
    assert dict(event.attributes or {}) == {
        "db.client.connection.pool.name": "one",
        otel.WAIT_SECONDS: pytest.approx(event.attributes[otel.WAIT_SECONDS]),  # type: ignore[index]
        otel.OUTCOME: "success",
    }
    assert event.attributes[otel.WAIT_SECONDS] >= 0.05  # type: ignore[index,operator]
    # The fixture's first checkout, the holder's and the waiter's are counted, the waiter's
    # wait too; the first (it opened the connection) and the waiter's found none idle.
    assert value(registry, WAIT + "_count", pool="one", outcome="success") == 3
    waits = value(registry, WAIT + "_sum", pool="one", outcome="success")
    assert waits >= event.attributes[otel.WAIT_SECONDS]  # type: ignore[operator]
    assert value(registry, "sqlalchemy_pool_waited_checkouts_total", pool="one") == 2


def test_a_checkout_that_times_out_puts_its_trace_on_the_timeout_series(
    traced: Traces, registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=1, max_overflow=0, pool_timeout=0.1)
    handle = pool_exporter.instrument(engine, name="timeout", registry=registry)
    try:
        with (
            engine.connect(),
            traced.tracer.start_as_current_span("request") as span,
            pytest.raises(sa.exc.TimeoutError),
        ):
            engine.connect()
        text = served(registry)
        errors = value(registry, "pool_exporter_hook_errors_total", pool="timeout", hook="checkout")
    finally:
        handle.uninstrument()
        engine.dispose()
    (event,) = events(traced.finished())
    assert event[otel.OUTCOME] == "timeout"
    assert event[otel.WAIT_SECONDS] >= 0.1
    assert event["db.client.connection.pool.name"] == "timeout"
    found = bucket_exemplars(text, WAIT, pool="timeout", outcome="timeout")
    assert list(found) == [bucket_of(event[otel.WAIT_SECONDS], m.WAIT_BUCKETS)]
    (exemplar,) = found.values()
    assert exemplar.labels == ids(span)
    assert exemplar.value == event[otel.WAIT_SECONDS]
    assert bucket_exemplars(text, WAIT, pool="timeout", outcome="success") == {}
    assert errors == 0


def test_an_async_checkout_waits_in_its_tasks_span_and_a_cancelled_one_says_so(
    traced: Traces, registry: CollectorRegistry, aiosqlite_url: str
) -> None:
    async def main() -> tuple[dict[str, str], dict[str, str], str]:
        engine = create_async_engine(aiosqlite_url, pool_size=1, max_overflow=0, pool_timeout=5)
        handle = pool_exporter.instrument(engine, name="async", registry=registry)
        stats = handle.stats

        async def until_waiting() -> None:
            while stats.waiting < 1:
                await asyncio.sleep(0.001)

        async def waits() -> dict[str, str]:
            with traced.tracer.start_as_current_span("request") as span:
                async with engine.connect():
                    return ids(span)

        try:
            async with engine.connect():
                served_task = asyncio.create_task(waits())
                await until_waiting()
                await asyncio.sleep(0.03)  # the wait the task is to have
            waited = await served_task
            async with engine.connect():
                cancelled_task = asyncio.create_task(waits())
                await until_waiting()
                cancelled_task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await cancelled_task
            cancelled = ids(traced.finished()[-1])
            return waited, cancelled, served(registry)
        finally:
            handle.uninstrument()
            await engine.dispose()

    waited, cancelled, text = asyncio.run(main())
    first, second = traced.finished()
    assert ids(first) == waited and ids(second) == cancelled
    assert [e[otel.OUTCOME] for e in events((first,))] == ["success"]
    assert [e[otel.OUTCOME] for e in events((second,))] == ["cancelled"]
    found = bucket_exemplars(text, WAIT, pool="async", outcome="success")
    assert [e.labels for e in found.values()] == [waited]
    found = bucket_exemplars(text, WAIT, pool="async", outcome="cancelled")
    assert [e.labels for e in found.values()] == [cancelled]


def test_a_checkout_that_found_an_idle_connection_reads_no_span(
    traced: Traces,
    pool: PoolInstrumentation,
    registry: CollectorRegistry,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reads: list[str] = []
    read_span = trace.get_current_span

    def counted(*args: Any) -> trace.Span:
        # pool-exporter's reads only: the SDK reads the current span too, for a new one's parent
        if sys._getframe(1).f_globals["__name__"] == "pool_exporter.otel":
            reads.append("read")
        return read_span(*args)

    def waited() -> float:
        return value(registry, "sqlalchemy_pool_waited_checkouts_total", pool="one")

    before = waited()  # the fixture's first checkout, which opened the connection
    monkeypatch.setattr(trace, "get_current_span", counted)
    with traced.tracer.start_as_current_span("request"):
        for _ in range(200):
            with pool.engine.connect():
                pass
    assert reads == []
    assert traced.finished()[0].events == ()
    assert waited() == before
    # The one that waits does read it.
    wait_in(pool, 0.02, lambda: traced.tracer.start_as_current_span("waits"))
    assert reads == ["read"]
    assert waited() == before + 1


def test_outside_any_span_a_waited_checkout_is_counted_as_without_exemplars(
    traced: Traces, pool: PoolInstrumentation, registry: CollectorRegistry
) -> None:
    wait_in(pool, 0.02, contextlib.nullcontext)
    text = served(registry)
    assert " # {" not in text  # no exemplar anywhere
    assert traced.finished() == ()
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="one") == 3
    assert value(registry, WAIT + "_count", pool="one", outcome="success") == 3
    assert value(registry, "sqlalchemy_pool_waited_checkouts_total", pool="one") == 2
    for hook in m.HOOKS:
        assert value(registry, "pool_exporter_hook_errors_total", pool="one", hook=hook) == 0


WITHOUT_THE_EXTRA = r"""
import sys, threading, time
sys.modules["opentelemetry"] = None  # as if the otel extra were not installed
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest
import pool_exporter
registry = CollectorRegistry()
engine = sa.create_engine(sys.argv[1], pool_size=1, max_overflow=0)
handle = pool_exporter.instrument(engine, name="plain", registry=registry)
held = engine.connect()
waiter = threading.Thread(target=lambda: engine.connect().close())
waiter.start()
while handle.stats.waiting < 1:
    time.sleep(0.001)
time.sleep(0.02)
held.close()
waiter.join()
try:
    import pool_exporter.otel
except ImportError as exc:
    print("otel:", exc)
sys.stdout.write(generate_latest(registry).decode())
"""


def test_without_the_extra_a_waited_checkout_is_counted_and_nothing_reads_a_span(
    sqlite_url: str,
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_EXTRA, sqlite_url],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    first, text = result.stdout.split("\n", 1)
    needs = "pool_exporter.otel needs OpenTelemetry's API: pip install 'pool-exporter[otel]'"
    assert first == f"otel: {needs}"
    assert " # {" not in text  # no exemplar
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in om_parse(text)
        for s in f.samples
    }
    assert samples[("sqlalchemy_pool_waited_checkouts_total", (("pool", "plain"),))] == 2
    errors = [v for (name, _), v in samples.items() if name == "pool_exporter_hook_errors_total"]
    assert errors and set(errors) == {0}
    assert result.stderr == ""


def test_an_unsampled_trace_gets_no_exemplar_and_no_event(
    pool: PoolInstrumentation, registry: CollectorRegistry
) -> None:
    unsampled, provider = traces(sampler=ALWAYS_OFF)
    otel.enable_exemplars()
    try:
        with unsampled.tracer.start_as_current_span("request") as span:
            assert span.get_span_context().is_valid
            assert not span.get_span_context().trace_flags.sampled
        wait_in(pool, 0.02, lambda: unsampled.tracer.start_as_current_span("request"))
    finally:
        otel.disable_exemplars()
        provider.shutdown()
    assert bucket_exemplars(served(registry), WAIT) == {}
    assert unsampled.finished() == ()


def test_a_long_hold_puts_the_borrowing_span_on_its_hold_bucket_wherever_it_comes_back(
    traced: Traces, registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=2)
    handle = pool_exporter.instrument(
        engine, name="holds", registry=registry, long_checkout_threshold=0.05
    )
    try:
        with traced.tracer.start_as_current_span("short"), engine.connect():
            pass  # under the threshold: no exemplar
        with traced.tracer.start_as_current_span("long") as span:
            connection = engine.connect()
            borrowed = ids(span)
        started = time.monotonic()
        time.sleep(0.08)  # the hold, past the threshold
        connection.close()  # outside any span
        held = time.monotonic() - started
        text = served(registry)
    finally:
        handle.uninstrument()
        engine.dispose()
    found = bucket_exemplars(text, HOLD, pool="holds")
    assert len(found) == 1
    ((le, exemplar),) = found.items()
    assert exemplar.labels == borrowed
    assert 0.08 <= exemplar.value <= held + 0.05
    assert le == bucket_of(exemplar.value, m.HOLD_BUCKETS)


def test_disable_exemplars_stops_reading_spans_and_keeps_what_was_recorded(
    traced: Traces, pool: PoolInstrumentation, registry: CollectorRegistry
) -> None:
    wait_in(pool, 0.02, lambda: traced.tracer.start_as_current_span("before"))
    before = bucket_exemplars(served(registry), WAIT)
    otel.disable_exemplars()
    assert exemplars.TRACING.min_wait == math.inf and exemplars.TRACING.recorder is None
    wait_in(pool, 0.02, lambda: traced.tracer.start_as_current_span("after"))
    assert [s.name for s in traced.finished()] == ["before", "after"]
    assert len(events(traced.finished())) == 1
    assert bucket_exemplars(served(registry), WAIT) == before != {}


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"span_events": "yes"}, "span_events must be True or False, got 'yes'"),
        ({"min_wait": -1}, "min_wait must be a number of seconds, 0 or more, got -1"),
        ({"min_wait": float("nan")}, "min_wait must be a number of seconds, 0 or more, got nan"),
        ({"min_wait": "1ms"}, "min_wait must be a number of seconds, 0 or more, got '1ms'"),
        ({"min_wait": True}, "min_wait must be a number of seconds, 0 or more, got True"),
    ],
)
def test_enable_exemplars_refuses_anything_else_with_one_message(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises((TypeError, ValueError)) as raised:
        otel.enable_exemplars(**arguments)
    assert str(raised.value) == message
    assert exemplars.TRACING.recorder is None


class Broken:
    """A recorder that fails, as a tracing SDK with a bug would inside add_event."""

    def checkout(self, found: exemplars.Exemplars, wait: float, outcome: str) -> None:
        raise RuntimeError("tracing is broken")

    def capture(self) -> exemplars.Trace | None:
        raise RuntimeError("tracing is broken")


def test_a_failing_recorder_is_a_counted_hook_error_and_the_checkout_goes_on(
    pool: PoolInstrumentation, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    exemplars.TRACING.on(Broken(), 0.0)
    try:
        wait_in(pool, 0.02, contextlib.nullcontext)  # the waited checkout asks the recorder
        with pool.engine.connect() as conn:
            assert conn.exec_driver_sql("select 1").scalar() == 1
    finally:
        exemplars.TRACING.off()
    assert value(registry, "pool_exporter_hook_errors_total", pool="one", hook="checkout") == 1
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="one") == 4
    assert value(registry, "sqlalchemy_pool_connections", pool="one", state="idle") == 1
    assert "tracing is broken" in caplog.text


def test_the_text_format_shows_no_exemplar_and_the_same_samples(
    traced: Traces, pool: PoolInstrumentation, registry: CollectorRegistry
) -> None:
    wait_in(pool, 0.02, lambda: traced.tracer.start_as_current_span("request"))
    text = served(registry, "text/plain; version=0.0.4")
    openmetrics = served(registry)
    assert " # {" in openmetrics and "#" not in "".join(
        line for line in text.splitlines() if not line.startswith("# ")
    )

    def buckets(families: Any) -> dict[tuple[tuple[str, str], ...], float]:
        return {
            tuple(sorted(s.labels.items())): s.value
            for f in families
            for s in f.samples
            if s.name == WAIT + "_bucket" and s.labels["pool"] == "one"
        }

    assert buckets(text_parse(text)) == buckets(om_parse(openmetrics))


def test_a_forked_child_starts_without_its_parents_exemplars(
    traced: Traces, pool: PoolInstrumentation, registry: CollectorRegistry
) -> None:
    wait_in(pool, 0.02, lambda: traced.tracer.start_as_current_span("parent"))
    assert bucket_exemplars(served(registry), WAIT) != {}

    def child() -> tuple[int, int]:
        before = len(bucket_exemplars(served(registry), WAIT))
        wait_in(pool, 0.02, lambda: traced.tracer.start_as_current_span("child"))
        return before, len(bucket_exemplars(served(registry), WAIT))

    assert in_child(child) == (0, 1)
    assert len(bucket_exemplars(served(registry), WAIT)) == 1


# -- multiprocess mode: workers' files, read by the sidecar -----------------------------------


@dataclass
class Worker:
    popen: subprocess.Popen[str]
    waits: list[dict[str, Any]]


@pytest.fixture
def directories(tmp_path: Path) -> tuple[Path, Path]:
    """The multiprocess directory, and one for the workers' SQLite files."""
    multiproc, data = tmp_path / "mp", tmp_path / "data"
    multiproc.mkdir()
    data.mkdir()
    return multiproc, data


def start_worker(procs: Procs, directories: tuple[Path, Path], hold: float, *args: str) -> Worker:
    """tests/apps/traced_waits.py in multiprocess mode: its wait, once it has made it (and
    its long hold, with --long-hold)."""
    multiproc, data = directories
    popen, _ = procs.writer(multiproc, str(data), "--hold", str(hold), *args, app="traced_waits.py")
    assert popen.stdout is not None
    lines = 2 if "--long-hold" in args else 1
    return Worker(popen, [json.loads(popen.stdout.readline()) for _ in range(lines)])


def shown(text: str) -> dict[str, dict[str, str]]:
    """The trace of each bucket of pool `traced`'s wait histogram, by `le`."""
    return {le: dict(e.labels) for le, e in bucket_exemplars(text, WAIT, pool="traced").items()}


def expected(*workers: Worker) -> dict[str, dict[str, str]]:
    """The newest wait of each bucket among the workers' (listed oldest first)."""
    out = {}
    for worker in workers:
        for wait in worker.waits:
            out[bucket_of(wait["wait"], m.WAIT_BUCKETS)] = {
                "trace_id": wait["trace_id"],
                "span_id": wait["span_id"],
            }
    return out


def test_two_workers_waits_reach_the_sidecar_as_the_newest_exemplar_of_each_bucket(
    directories: tuple[Path, Path], procs: Procs
) -> None:
    first = start_worker(procs, directories, hold=0.3)
    second = start_worker(procs, directories, hold=0.3)
    sidecar = start_sidecar(procs, directories[0])
    response = sidecar.client.get(sidecar.url + "/metrics", headers={"Accept": OPENMETRICS})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    found = shown(response.text)
    assert found == expected(first, second)
    # The second worker's wait is the newest of its bucket, so it is shown whatever the first's.
    assert second.waits[0]["trace_id"] in {t["trace_id"] for t in found.values()}
    samples = sidecar.scrape()  # the text format: the same counts, no exemplars
    # In each worker, the checkout of the thread that held the connection, and the waited one.
    assert total(samples, WAIT + "_count", pool="traced") == 4
    assert " # {" not in sidecar.text()
    for worker in (first, second):
        worker.popen.kill()


def test_an_exited_workers_exemplars_go_with_it_and_its_counts_stay(
    directories: tuple[Path, Path], procs: Procs
) -> None:
    multiproc = directories[0]
    gone = start_worker(procs, directories, hold=0.05)
    stays = start_worker(procs, directories, hold=0.05)
    collector = WorkersCollector(str(multiproc))
    assert shown(scraped(collector)) == expected(gone, stays)
    kill9(gone.popen.pid)
    gone.popen.wait(5)
    text = scraped(collector)
    assert shown(text) == expected(stays)
    assert exemplar_files(multiproc) == [f"{stays.waits[0]['pid']}"]
    assert counted(text, WAIT + "_count") == 4
    stays.popen.kill()


def test_a_forked_worker_writes_its_own_exemplars_and_keeps_none_of_its_parents(
    directories: tuple[Path, Path], procs: Procs
) -> None:
    multiproc = directories[0]
    parent = start_worker(procs, directories, 0.05, "--then-fork")
    assert parent.popen.stdout is not None
    child = Worker(parent.popen, [json.loads(parent.popen.stdout.readline())])
    assert child.waits[0]["pid"] != parent.waits[0]["pid"]
    files = {
        int(match.group(1)): exemplarfile.decode(path.read_bytes())
        for path in multiproc.iterdir()
        if (match := filenames.EXEMPLAR_FILE.match(path.name)) is not None
    }
    traces = {pid: {f"{t.trace_id:032x}" for _, _, t in entries} for pid, entries in files.items()}
    assert traces == {
        parent.waits[0]["pid"]: {parent.waits[0]["trace_id"]},
        child.waits[0]["pid"]: {child.waits[0]["trace_id"]},
    }
    assert shown(scraped(WorkersCollector(str(multiproc)))) == expected(parent, child)


def scraped(collector: WorkersCollector) -> str:
    """One OpenMetrics scrape of `collector`, as the sidecar writes it."""
    return encode(Exposed(collector), openmetrics_exposition.generate_latest).decode()


def counted(text: str, name: str, **labels: str) -> float:
    return sum(
        s.value
        for f in om_parse(text)
        for s in f.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def exemplar_files(directory: Path) -> list[str]:
    """The pids whose exemplar files are in `directory`."""
    names = (filenames.EXEMPLAR_FILE.match(p.name) for p in sorted(directory.iterdir()))
    return [match.group(1) for match in names if match is not None]


def the_exemplar_file(directory: Path) -> Path:
    (name,) = [p for p in directory.iterdir() if filenames.EXEMPLAR_FILE.match(p.name)]
    return name


def rewrite_record(path: Path, change: Callable[[bytearray], None]) -> None:
    """Change the one record the worker wrote, in place."""
    data = bytearray(path.read_bytes())
    size = exemplarfile.RECORD_BYTES
    starts = (exemplarfile.HEADER_BYTES + i * size for i in range(exemplarfile.RECORDS))
    (at,) = [start for start in starts if any(data[start : start + size])]
    record = data[at : at + size]
    change(record)
    data[at : at + size] = record
    with open(path, "r+b") as f:  # in place: the worker still has it mapped
        f.write(data)


def torn(record: bytearray) -> None:
    record[8] ^= 0xFF  # the trace id changed, the checksum not: read while being written


def out_of_its_bucket(record: bytearray) -> None:
    body = bytearray(record[8:])
    body[24:32] = struct.pack("<d", 1e9)  # the value: far past the bucket the record is in
    record[8:] = body
    record[0:4] = zlib.crc32(bytes(body)).to_bytes(4, "little")  # a checksum that matches


def other_bounds(path: Path) -> None:
    data = bytearray(path.read_bytes())
    length = int.from_bytes(data[8:16], "little")
    meta = json.loads(data[16 : 16 + length])
    meta["series"]["wait"]["bounds"][0] = 0.002
    body = json.dumps(meta).encode()
    page = (exemplarfile.MAGIC + len(body).to_bytes(8, "little") + body).ljust(
        exemplarfile.HEADER_BYTES, b"\0"
    )
    path.write_bytes(page + bytes(data[exemplarfile.HEADER_BYTES :]))


def replace_by(path: Path, make: Callable[[Path], None]) -> None:
    path.unlink()  # the worker keeps its mapping of the removed file
    make(path)


# Each fault: the damage, the reason a reader opening the file counts it under (None: the
# file is sound, the records are not), and whether a reader that has kept the file open still
# serves the worker's exemplars: it rereads only the records, which the worker writes by its
# own layout, from the file the worker writes (another file under the name is not that).
FAULTS: dict[str, tuple[Callable[[Path], None], str | None, bool]] = {
    "truncated": (lambda p: os.truncate(p, 100), "format", False),
    "cut short of a record": (lambda p: os.truncate(p, p.stat().st_size - 1), "format", False),
    "nested header": (
        lambda p: p.write_bytes(
            (exemplarfile.MAGIC + (6000).to_bytes(8, "little") + b"[" * 2000).ljust(6000, b"]")
        ),
        "format",
        False,
    ),
    "too large": (lambda p: os.truncate(p, 1 << 20), "too_large", False),
    "torn record": (lambda p: rewrite_record(p, torn), None, False),
    "record out of its bucket": (lambda p: rewrite_record(p, out_of_its_bucket), None, False),
    "other buckets": (other_bounds, None, True),
    "garbage": (
        lambda p: replace_by(p, lambda q: q.write_bytes(os.urandom(6000))),
        "format",
        True,
    ),
    "empty": (lambda p: replace_by(p, lambda q: q.write_bytes(b"")), "format", True),
    "fifo": (lambda p: replace_by(p, os.mkfifo), "not_regular", True),
    "symlink": (lambda p: replace_by(p, lambda q: q.symlink_to("/dev/zero")), "symlink", True),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_broken_exemplar_file_costs_its_exemplars_only(
    fault: str, directories: tuple[Path, Path], procs: Procs
) -> None:
    multiproc = directories[0]
    worker = start_worker(procs, directories, hold=0.02)
    kept = WorkersCollector(str(multiproc))  # reads the file now, and keeps it open
    assert shown(scraped(kept)) == expected(worker)
    damage, reason, still_served = FAULTS[fault]
    damage(the_exemplar_file(multiproc))
    opened = WorkersCollector(str(multiproc))  # a sidecar started after the damage
    for scrape in range(2):
        for reader in (kept, opened):
            text = scraped(reader)
            assert counted(text, WAIT + "_count") == 2  # the counts are all there
            assert counted(text, "pool_exporter_multiprocess_up") == 1
            bad = {
                r: counted(text, "pool_exporter_multiprocess_bad_files", reason=r)
                for r in m.BAD_FILE_REASONS
            }
            if reader is kept and still_served:
                assert shown(text) == expected(worker)
                assert set(bad.values()) == {0}
                continue
            assert shown(text) == {}
            # A file kept open cannot be told too large from otherwise not whole; the next
            # scrape opens it again.
            counted_as = "format" if reader is kept and scrape == 0 and reason else reason
            assert bad == {r: 1 if r == counted_as else 0 for r in m.BAD_FILE_REASONS}
    assert worker.popen.poll() is None
    samples = scrape_within(opened)
    assert total(samples, "sqlalchemy_pool_checkouts_total") == 2
    worker.popen.kill()


class ExemplarPrometheus(PrometheusServer):
    """A real Prometheus that stores the exemplars it scrapes."""

    def command(self) -> list[str]:
        return [*super().command(), "--enable-feature=exemplar-storage"]


def exemplar_queries(dashboard: dict[str, Any]) -> dict[str, str]:
    """The query of every dashboard target that asks for exemplars, by panel title, with
    Grafana's variables replaced as Grafana would for "All"."""
    found = {}
    for row in dashboard["panels"]:
        for panel in [row, *row.get("panels", [])]:
            for target in panel.get("targets", []):
                if target.get("exemplar"):
                    expr = target["expr"].replace("$__rate_interval", "1m")
                    found[panel["title"]] = re.sub(r"\$\w+", ".*", expr)
    return found


def traces_of(prom: PrometheusServer, query: str) -> set[str]:
    """The trace ids of the exemplars Prometheus holds for the series `query` reads."""
    now = time.time()
    params = {"query": query, "start": f"{now - 600:.3f}", "end": f"{now + 60:.3f}"}
    data: Any = prom.api.get("/api/v1/query_exemplars", params)  # a list, for this endpoint
    return {e["labels"]["trace_id"] for series in data for e in series["exemplars"]}


def test_prometheus_stores_the_sidecars_exemplars_and_the_dashboards_panels_find_them(
    directories: tuple[Path, Path], procs: Procs
) -> None:
    worker = start_worker(procs, directories, 0.05, "--long-hold", "0.4")
    wait, hold = worker.waits
    sidecar = start_sidecar(procs, directories[0])
    panels = exemplar_queries(json.loads((ROOT / "dashboards" / "pool-exporter.json").read_text()))
    assert sorted(panels) == [
        "Checkout wait (heatmap)",
        "Checkout wait p50 / p95 / p99 vs pool timeout",
        "Connection hold time p50 / p95 / p99",
    ]
    target = sidecar.url.removeprefix("http://")
    binary = require_binary("prometheus")
    with ExemplarPrometheus([target], interval=0.5, binary=binary) as prom:

        def traces() -> dict[str, set[str]] | None:
            """The trace ids of the exemplars each panel's query finds, once all find some."""
            found = {title: traces_of(prom, query) for title, query in panels.items()}
            return found if all(found.values()) else None

        found = wait_until(traces, timeout=30, what="Prometheus to store the exemplars")
    assert found == {
        "Checkout wait (heatmap)": {wait["trace_id"]},
        "Checkout wait p50 / p95 / p99 vs pool timeout": {wait["trace_id"]},
        "Connection hold time p50 / p95 / p99": {hold["trace_id"]},
    }
    worker.popen.kill()
