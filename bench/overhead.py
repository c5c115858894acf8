"""What instrumentation costs a warm checkout + checkin (`engine.connect().close()`).

Each variant runs in a process of its own, because OpenTelemetry's instrumentation wraps
`Engine.connect` for every engine of the process, instrumented or not: a baseline measured
beside it would understate its cost. The variants take turns over several rounds so that drift
of the machine hits them all alike; the figures are medians, and the ratios are against the
baseline of the same run. docs/internals.md explains what the exporter's hooks do.

    .venv/bin/python bench/overhead.py [--rounds 3] [--cycles 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import timeit

VARIANTS = {
    "baseline": "no instrumentation",
    "hooks-only": "an empty connect() wrapper and checkin listener: the floor",
    "pool-exporter": "pool_exporter.instrument(engine)",
    "pool-exporter-multiprocess": "the same, PROMETHEUS_MULTIPROC_DIR set (gunicorn workers)",
    "opentelemetry": "opentelemetry-instrumentation-sqlalchemy, SDK MeterProvider recording",
}


def measure(variant: str, cycles: int, repeats: int) -> float:
    """Median microseconds per `engine.connect().close()` in this process."""
    import sqlalchemy as sa

    workdir = tempfile.mkdtemp(prefix="pool-exporter-bench-")
    engine = sa.create_engine(f"sqlite:///{workdir}/bench.db", pool_size=5)
    if variant.startswith("pool-exporter"):
        import pool_exporter

        pool_exporter.instrument(engine, name="bench")
    elif variant == "hooks-only":  # what any exporter built on these two hooks pays first
        original = engine.pool.connect

        def connect() -> object:
            return original()

        engine.pool.connect = connect  # type: ignore[method-assign,assignment]
        sa.event.listen(engine, "checkin", lambda dbapi_connection, record: None)
    elif variant == "opentelemetry":
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader

        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        # It declares sqlalchemy < 2.1 and instruments nothing on 2.1 without this flag.
        SQLAlchemyInstrumentor().instrument(
            engine=engine, meter_provider=provider, skip_dep_check=True
        )

    def cycle() -> None:
        engine.connect().close()

    for _ in range(2000):  # warm the pool and the code paths
        cycle()
    if variant == "opentelemetry":  # prove it records: the pool usage metric exists
        names = {
            m.name
            for rm in reader.get_metrics_data().resource_metrics  # type: ignore[union-attr]
            for sm in rm.scope_metrics
            for m in sm.metrics
        }
        assert any("connection" in n for n in names), names
    runs = timeit.repeat(cycle, number=cycles, repeat=repeats)
    return statistics.median(runs) / cycles * 1e6


def run_variant(variant: str, cycles: int, repeats: int) -> float:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    with tempfile.TemporaryDirectory() as mp_dir:
        if variant == "pool-exporter-multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
        out = subprocess.run(
            [sys.executable, __file__, "--child", variant, "--cycles", str(cycles),
             "--repeats", str(repeats)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )  # fmt: skip
    return float(json.loads(out.stdout)["us"])


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def machine() -> str:
    """What makes figures differ between machines: the CPU, and what a clock read costs (the
    instrumented cycle reads the clock three times; the baseline does not)."""
    cpuinfo = _read("/proc/cpuinfo").splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo if "model name" in line), "?")
    clock = _read("/sys/devices/system/clocksource/clocksource0/current_clocksource").strip() or "?"
    read = min(timeit.repeat(time.perf_counter, number=200_000, repeat=5)) / 200_000 * 1e9
    return f"{cpu}, {os.cpu_count()} cores, clocksource {clock}, perf_counter() {read:.0f} ns"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps({"us": measure(args.child, args.cycles, args.repeats)}))
        return 0

    results: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.rounds):
        for variant in VARIANTS:
            results[variant].append(run_variant(variant, args.cycles, args.repeats))
    base = statistics.median(results["baseline"])
    import sqlalchemy

    print(f"engine.connect().close() on a warm SQLite-file QueuePool, SQLAlchemy "
          f"{sqlalchemy.__version__}, Python {sys.version.split()[0]}")  # fmt: skip
    print(machine())
    print(f"median of {args.rounds} processes x {args.repeats} repeats x {args.cycles} cycles\n")
    print(f"{'variant':<28}{'us/cycle':>10}{'added us':>10}{'ratio':>8}  what")
    for variant, what in VARIANTS.items():
        us = statistics.median(results[variant])
        print(f"{variant:<28}{us:>10.2f}{us - base:>+10.2f}{us / base:>7.2f}x  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
