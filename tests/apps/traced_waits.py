"""A worker whose checkouts wait inside sampled OpenTelemetry spans, with exemplars on.

    traced_waits.py DIRECTORY [--waits N] [--hold SECONDS] [--long-hold SECONDS] [--then-fork]

Instruments a QueuePool of one connection on a SQLite file in DIRECTORY (pool "traced"),
with a real SDK TracerProvider that samples every trace, and calls
pool_exporter.otel.enable_exemplars(). Then, N times: a thread takes the only connection,
the main thread asks for one inside a span, and the thread gives its connection back HOLD
seconds after the pool counts the caller waiting. Prints `parent PID`, then one JSON line per
wait (the pid, the span's trace_id and span_id in hex, the wait the pool measured, from the
span's event). With --long-hold, the pool's long_checkout_threshold is half of it, and a
connection is then borrowed inside a span and held that long: one more JSON line (the span's
ids, the hold). With --then-fork, it then forks a child (dispose_on_fork) that makes one
wait of its own and prints its line. Then each waits until stdin closes, holding its liveness
lock as a live worker does.
"""

import argparse
import json
import os
import sys
import threading
import time

import sqlalchemy as sa
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer

import pool_exporter
import pool_exporter.otel


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("--waits", type=int, default=1)
    parser.add_argument("--hold", type=float, default=0.3)
    parser.add_argument("--long-hold", type=float)
    parser.add_argument("--then-fork", action="store_true")
    args = parser.parse_args()
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    tracer = provider.get_tracer("traced_waits")
    path = os.path.join(args.directory, f"traced-{os.getpid()}.db")
    engine = sa.create_engine(f"sqlite:///{path}", pool_size=1, max_overflow=0)
    threshold = args.long_hold / 2 if args.long_hold else None
    handle = pool_exporter.instrument(
        engine, name="traced", long_checkout_threshold=threshold, dispose_on_fork=True
    )
    pool_exporter.otel.enable_exemplars()
    print("parent", os.getpid(), flush=True)  # as tests/apps/pool_writer.py does
    for _ in range(args.waits):
        print(json.dumps(one_wait(handle, tracer, spans, args.hold)), flush=True)
    if args.long_hold:
        with tracer.start_as_current_span("long") as span:
            connection = engine.connect()
        started = time.monotonic()
        time.sleep(args.long_hold)
        connection.close()
        context = span.get_span_context()
        found = {
            "pid": os.getpid(),
            "trace_id": f"{context.trace_id:032x}",
            "span_id": f"{context.span_id:016x}",
            "hold": time.monotonic() - started,
        }
        print(json.dumps(found), flush=True)
    if args.then_fork and os.fork() == 0:  # the child: a wait of its own
        print(json.dumps(one_wait(handle, tracer, spans, args.hold)), flush=True)
        sys.stdin.read()
        os._exit(0)
    sys.stdin.read()


def one_wait(
    handle: pool_exporter.PoolInstrumentation,
    tracer: Tracer,
    spans: InMemorySpanExporter,
    hold: float,
) -> dict[str, object]:
    """A checkout inside a span that waits for the one connection another thread holds."""
    engine = handle.engine
    taken, waiting = threading.Event(), threading.Event()

    def holder() -> None:
        with engine.connect():
            taken.set()
            waiting.wait()
            time.sleep(hold)  # the wait the caller is to have, from here

    holding = threading.Thread(target=holder)
    holding.start()
    taken.wait()
    watcher = threading.Thread(target=watch, args=(handle, waiting))
    watcher.start()
    with tracer.start_as_current_span("request") as span, engine.connect():
        context = span.get_span_context()
    holding.join()
    watcher.join()
    (event,) = [e for s in spans.get_finished_spans() for e in s.events][-1:]
    return {
        "pid": os.getpid(),
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "wait": event.attributes[pool_exporter.otel.WAIT_SECONDS],
    }


def watch(handle: pool_exporter.PoolInstrumentation, waiting: threading.Event) -> None:
    while handle.stats.waiting < 1:
        time.sleep(0.001)
    waiting.set()


if __name__ == "__main__":
    main()
