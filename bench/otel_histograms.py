"""What OpenTelemetry costs a warm checkout + checkin (`engine.connect().close()`), in the
forms the Python SDK allows, against an uninstrumented baseline measured in the same run.

`pool_exporter.otel.enable()` registers observable instruments only: they are read when the
provider collects, so the checkout path should cost what `instrument()` alone costs. The
three histograms of the conventions (wait_time, use_time, create_time) are another matter:
the SDK (1.45) takes a histogram one observation at a time through `Histogram.record()`, as
it has no way to hand over one already aggregated (opentelemetry-python #4768; PR #5419,
MetricProducer, still open). The `sdk-histograms` variants measure that form, through the
hook the next round would add: a PoolStats variant that records each wait and each hold into
an SDK Histogram right after counting it (built here by subclassing; stats.py is unchanged).

Each variant runs in a process of its own (OpenTelemetry's SQLAlchemy instrumentation slows
every engine of its process), the variants take turns over `--rounds`, and the figures are
medians, as in bench/overhead.py. `--collection` times one collection of the observable
instruments (and one Prometheus scrape) with `--pools` pools instrumented. `--interleaved` is
for a busy machine: INTERLEAVED's variants run in one process, on engines of their own,
taking turns every `--cycles` cycles, so that the machine's other load hits them alike (the
SDK's recording touches no other engine, unlike OpenTelemetry's SQLAlchemy instrumentation,
which is left out there, as is `enable()`, which covers every pool of its process).

    .venv/bin/python bench/otel_histograms.py [--rounds 3] [--cycles 20000] [--only VARIANT ...]
    .venv/bin/python bench/otel_histograms.py --collection [--pools 10]
    .venv/bin/python bench/otel_histograms.py --interleaved [--turns 60] [--cycles 2000]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import timeit
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from overhead import machine  # the sibling script: the same header line

VARIANTS = {
    "baseline": "no instrumentation",
    "pool-exporter": "pool_exporter.instrument(engine)",
    "pool-exporter+otel": "the same, and pool_exporter.otel.enable() on an SDK MeterProvider",
    "sdk-histograms": "the same, and wait_time + use_time into SDK Histograms at each "
    "checkout/checkin",
    "sdk-histograms-no-exemplars": "the same, exemplar_filter=AlwaysOff (no span lookup)",
    "sdk-wait-histogram": "the same as sdk-histograms, wait_time only (one record a cycle)",
    "opentelemetry": "opentelemetry-instrumentation-sqlalchemy, SDK MeterProvider recording",
}


def recording_stats(provider: Any, use_time: bool) -> Any:
    """A PoolStats that also records each wait (and each hold, with `use_time`) into SDK
    Histograms of the conventions: the hook this bench measures for the next round."""
    from pool_exporter import metrics as m
    from pool_exporter import otel
    from pool_exporter.stats import PoolStats

    meter = provider.get_meter(otel.SCOPE, schema_url=otel.SCHEMA_URL)
    wait = meter.create_histogram(
        "db.client.connection.wait_time",
        unit="s",
        explicit_bucket_boundaries_advisory=m.WAIT_BUCKETS,
    )
    use = meter.create_histogram(
        "db.client.connection.use_time",
        unit="s",
        explicit_bucket_boundaries_advisory=m.HOLD_BUCKETS,
    )
    attributes = {otel.POOL_NAME: "bench"}
    record_wait, record_use = wait.record, use.record

    class Recording(PoolStats):
        def checked_out(self, wait: float, first: bool, was_idle: bool) -> None:
            super().checked_out(wait, first, was_idle)
            record_wait(wait, attributes)

        def checked_in(self, hold: float | None, now_idle: bool) -> None:
            super().checked_in(hold, now_idle)
            if use_time and hold is not None:
                record_use(hold, attributes)

    return Recording()


def provider_and_reader(variant: str) -> tuple[Any, Any]:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    options: dict[str, Any] = {}
    if variant == "sdk-histograms-no-exemplars":
        from opentelemetry.sdk.metrics._internal.exemplar import AlwaysOffExemplarFilter

        options["exemplar_filter"] = AlwaysOffExemplarFilter()
    return MeterProvider(metric_readers=[reader], **options), reader


def metric_names(reader: Any) -> dict[str, Any]:
    data = reader.get_metrics_data()
    return {
        metric.name: metric.data
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    }


def measure(variant: str, cycles: int, repeats: int) -> tuple[float, float]:
    """Median and fastest microseconds per `engine.connect().close()` in this process."""
    import sqlalchemy as sa

    workdir = tempfile.mkdtemp(prefix="pool-exporter-bench-")
    atexit.register(shutil.rmtree, workdir, True)
    engine = sa.create_engine(f"sqlite:///{workdir}/bench.db", pool_size=5)
    reader = None
    if variant == "opentelemetry":
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        provider, reader = provider_and_reader(variant)
        SQLAlchemyInstrumentor().instrument(
            engine=engine, meter_provider=provider, skip_dep_check=True
        )
    elif variant != "baseline":
        import importlib

        import pool_exporter

        if variant.startswith("sdk-"):
            provider, reader = provider_and_reader(variant)
            stats = recording_stats(provider, use_time=variant != "sdk-wait-histogram")
            # the module (pool_exporter.instrument is the function of that name)
            module = importlib.import_module("pool_exporter.instrument")
            module._new_stats = lambda *_, stats=stats: stats  # whatever instrument() passes
        elif variant == "pool-exporter+otel":
            provider, reader = provider_and_reader(variant)
        pool_exporter.instrument(engine, name="bench")
        if reader is not None:
            from pool_exporter import otel

            otel.enable(provider)

    def cycle() -> None:
        engine.connect().close()

    for _ in range(2000):  # warm the pool and the code paths
        cycle()
    if reader is not None:  # prove that it records what the variant says
        found = metric_names(reader)
        if variant.startswith("sdk-"):
            assert found["db.client.connection.wait_time"].data_points[0].count >= 2000
        if variant == "sdk-histograms":
            assert found["db.client.connection.use_time"].data_points[0].count >= 2000
        if variant == "pool-exporter+otel":
            assert "db.client.connection.count" in found, found
        if variant == "opentelemetry":
            assert any("connection" in n for n in found), found
    runs = timeit.repeat(cycle, number=cycles, repeat=repeats)
    return statistics.median(runs) / cycles * 1e6, min(runs) / cycles * 1e6


# enable() covers every pool of its process, so it is measured by the per-process mode only.
INTERLEAVED = ("baseline", "pool-exporter", "sdk-histograms")


def interleaved(cycles: int, turns: int) -> dict[str, float]:
    """Median microseconds per cycle of each INTERLEAVED variant, all in this process, and
    the median turn-by-turn difference of each against pool-exporter alone."""
    import importlib

    import sqlalchemy as sa

    import pool_exporter

    module = importlib.import_module("pool_exporter.instrument")
    workdir = tempfile.mkdtemp(prefix="pool-exporter-bench-")
    atexit.register(shutil.rmtree, workdir, True)
    provider, reader = provider_and_reader("sdk-histograms")
    engines = {}
    for variant in INTERLEAVED:
        engine = sa.create_engine(f"sqlite:///{workdir}/{variant}.db", pool_size=5)
        if variant == "sdk-histograms":
            original = module._new_stats
            stats = recording_stats(provider, use_time=True)
            module._new_stats = lambda *_, stats=stats: stats  # whatever instrument() passes
            pool_exporter.instrument(engine, name=variant)
            module._new_stats = original
        elif variant != "baseline":
            pool_exporter.instrument(engine, name=variant)
        engines[variant] = engine
    timers = {v: timeit.Timer(lambda e=e: e.connect().close()) for v, e in engines.items()}
    for timer in timers.values():
        timer.timeit(2000)
    found = metric_names(reader)
    assert found["db.client.connection.wait_time"].data_points[0].count >= 2000
    runs: dict[str, list[float]] = {v: [] for v in INTERLEAVED}
    for _ in range(turns):
        for variant, timer in timers.items():
            runs[variant].append(timer.timeit(cycles) / cycles * 1e6)
    out = {v: statistics.median(r) for v, r in runs.items()}
    for variant in INTERLEAVED[2:]:
        pairs = zip(runs[variant], runs["pool-exporter"], strict=True)
        out[f"{variant} - pool-exporter"] = statistics.median(a - b for a, b in pairs)
    return out


def print_interleaved(cycles: int, turns: int, rounds: int) -> None:
    found = [
        run_child("--child-interleaved", "--cycles", str(cycles), "--turns", str(turns))
        for _ in range(rounds)
    ]
    print(f"interleaved in one process: median of {rounds} processes x {turns} turns x "
          f"{cycles} cycles\n")  # fmt: skip
    base = statistics.median(f["baseline"] for f in found)
    print(f"{'variant':<30}{'us/cycle':>10}{'added us':>10}{'ratio':>8}  per round (us)")
    for variant in INTERLEAVED:
        values = [f[variant] for f in found]
        us = statistics.median(values)
        each = " ".join(f"{v:.2f}" for v in values)
        print(f"{variant:<30}{us:>10.2f}{us - base:>+10.2f}{us / base:>7.2f}x  {each}")
    print()
    for variant in INTERLEAVED[2:]:
        key = f"{variant} - pool-exporter"
        values = [f[key] for f in found]
        each = " ".join(f"{v:+.2f}" for v in values)
        print(f"{key}: {statistics.median(values):+.2f} us (median of the turn-by-turn "
              f"differences; per round {each})")  # fmt: skip


def collection(pools: int, repeats: int) -> dict[str, float]:
    """Milliseconds for one collection of the observable instruments, and for one Prometheus
    scrape, of `pools` instrumented pools (each with a connection out and one idle)."""
    import sqlalchemy as sa
    from prometheus_client import CollectorRegistry, generate_latest

    import pool_exporter
    from pool_exporter import otel

    workdir = tempfile.mkdtemp(prefix="pool-exporter-bench-")
    atexit.register(shutil.rmtree, workdir, True)
    registry = CollectorRegistry()
    provider, reader = provider_and_reader("pool-exporter+otel")
    otel.enable(provider)
    held = []
    for i in range(pools):
        engine = sa.create_engine(f"sqlite:///{workdir}/{i}.db", pool_size=5)
        pool_exporter.instrument(engine, name=f"pool-{i}", registry=registry)
        idle = engine.connect()
        held.append(engine.connect())
        idle.close()
    assert len(metric_names(reader)["db.client.connection.count"].data_points) >= 2 * pools
    otel_ms = timeit.repeat(reader.get_metrics_data, number=20, repeat=repeats)
    prom_ms = timeit.repeat(lambda: generate_latest(registry), number=20, repeat=repeats)
    return {
        "otel": statistics.median(otel_ms) / 20 * 1e3,
        "prometheus": statistics.median(prom_ms) / 20 * 1e3,
    }


def run_child(*args: str) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run(
        [sys.executable, __file__, *args], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--only", nargs="+", choices=VARIANTS, help="these variants (and the baseline)"
    )
    parser.add_argument("--collection", action="store_true")
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--interleaved", action="store_true")
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--child-collection", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child-interleaved", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        median, fastest = measure(args.child, args.cycles, args.repeats)
        print(json.dumps({"us": median, "min_us": fastest}))
        return 0
    if args.child_collection:
        print(json.dumps(collection(args.pools, args.repeats)))
        return 0
    if args.child_interleaved:
        print(json.dumps(interleaved(args.cycles, args.turns)))
        return 0
    print(machine())
    if args.interleaved:
        print_interleaved(args.cycles, args.turns, args.rounds)
        return 0
    if args.collection:
        found = [
            run_child("--child-collection", "--pools", str(args.pools), "--repeats",
                      str(args.repeats))
            for _ in range(args.rounds)
        ]  # fmt: skip
        print(f"one collection of {args.pools} pools, median of {args.rounds} processes x "
              f"{args.repeats} repeats x 20 collections")  # fmt: skip
        for what in ("otel", "prometheus"):
            values = [f[what] for f in found]
            each = " ".join(f"{v:.3f}" for v in values)
            print(f"{what:<12}{statistics.median(values):>8.3f} ms   per process: {each}")
        return 0

    variants = {v: w for v, w in VARIANTS.items() if not args.only or v in {"baseline", *args.only}}
    results: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            found = run_child("--child", variant, "--cycles", str(args.cycles),
                              "--repeats", str(args.repeats))  # fmt: skip
            results[variant].append(found["us"])
    import sqlalchemy
    from opentelemetry.sdk.version import __version__ as sdk_version

    print(f"engine.connect().close() on a warm SQLite-file QueuePool, SQLAlchemy "
          f"{sqlalchemy.__version__}, Python {sys.version.split()[0]}, "
          f"opentelemetry-sdk {sdk_version}")  # fmt: skip
    print(f"median of {args.rounds} processes x {args.repeats} repeats x {args.cycles} cycles\n")
    base = statistics.median(results["baseline"])
    print(f"{'variant':<30}{'us/cycle':>10}{'added us':>10}{'ratio':>8}  what")
    for variant, what in variants.items():
        us = statistics.median(results[variant])
        print(f"{variant:<30}{us:>10.2f}{us - base:>+10.2f}{us / base:>7.2f}x  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
