"""What instrumentation costs a warm checkout + checkin (`engine.connect().close()`).

Each variant runs in a process of its own, because OpenTelemetry's instrumentation wraps
`Engine.connect` for every engine of the process, instrumented or not: a baseline measured
beside it would understate its cost. The variants take turns over several rounds so that drift
of the machine hits them all alike; the figures are medians, and the ratios are against the
baseline of the same run. docs/internals.md explains what the exporter's hooks do.

    .venv/bin/python bench/overhead.py [--rounds 3] [--cycles 20000] [--only VARIANT ...]
                                       [--before DIR]   # DIR holds an older pool_exporter/
    .venv/bin/python bench/overhead.py --recording [--cycles 20000]
    .venv/bin/python bench/overhead.py --interleaved [--turns 60] [--cycles 2000] [--route]
                                       [--exemplars]

`--recording` times what a checkout that waited pays for its exemplar and span event, in
single-process and in multiprocess mode.

`--interleaved` is for a busy machine: baseline, single-process and multiprocess mode run in
one process, on three engines, taking turns every `--cycles` cycles; what the other load on
the machine does hits the three alike, turn by turn. Medians over the turns. `--route` adds
an engine with route=, `--exemplars` one whose turns run with enable_exemplars() on and a
sampled span current (switched off again for the other turns), each compared with
single-process mode turn by turn.
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
import time
import timeit
from collections.abc import Callable
from contextlib import ExitStack
from contextvars import ContextVar

# What an application's route= typically reads: a context variable its framework set.
ROUTE: ContextVar[str] = ContextVar("route", default="/orders/{id}")

VARIANTS = {
    "baseline": "no instrumentation",
    "hooks-only": "an empty connect() wrapper and checkin listener: the floor",
    "pool-exporter": "pool_exporter.instrument(engine)",
    "pool-exporter-threshold": "the same, long_checkout_threshold=60: a borrow site per checkout",
    "pool-exporter-multiprocess": "the same, PROMETHEUS_MULTIPROC_DIR set (gunicorn workers)",
    "pool-exporter-route": "the same, route= a ContextVar's get: checkouts counted by route",
    "pool-exporter-exemplars": "the same as pool-exporter, otel.enable() and "
    "enable_exemplars(), inside a sampled span",
    "opentelemetry": "opentelemetry-instrumentation-sqlalchemy, SDK MeterProvider recording",
    "before": "pool_exporter.instrument(engine), the package in --before",
}

MULTIPROCESS = ("pool-exporter-multiprocess",)


def measure(variant: str, cycles: int, repeats: int) -> tuple[float, float]:
    """Median and fastest microseconds per `engine.connect().close()` in this process."""
    import sqlalchemy as sa

    workdir = tempfile.mkdtemp(prefix="pool-exporter-bench-")

    atexit.register(shutil.rmtree, workdir, True)  # the SQLite file and stats files
    engine = sa.create_engine(f"sqlite:///{workdir}/bench.db", pool_size=5)
    inside = ExitStack()
    if variant.startswith("pool-exporter") or variant == "before":
        import pool_exporter

        if variant == "pool-exporter-threshold":
            pool_exporter.instrument(engine, name="bench", long_checkout_threshold=60.0)
        elif variant == "pool-exporter-route":
            pool_exporter.instrument(engine, name="bench", route=ROUTE.get)
        else:  # without the argument, so that an older checkout can be measured as well
            pool_exporter.instrument(engine, name="bench")
        if variant == "pool-exporter-exemplars":
            inside.enter_context(exemplars_on())
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
    with inside:
        runs = timeit.repeat(cycle, number=cycles, repeat=repeats)
    return statistics.median(runs) / cycles * 1e6, min(runs) / cycles * 1e6


def exemplars_on(min_wait: float | None = None) -> ExitStack:
    """pool_exporter.otel.enable() on an SDK MeterProvider and enable_exemplars(min_wait=),
    and a sampled span of an SDK TracerProvider current until the stack closes: a request's
    checkouts, which find an idle connection and so read no span."""
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    import pool_exporter.otel

    pool_exporter.otel.enable(MeterProvider())
    pool_exporter.otel.enable_exemplars(min_wait=min_wait)
    span = TracerProvider().get_tracer("bench").start_span("request")
    assert span.get_span_context().trace_flags.sampled
    stack = ExitStack()
    stack.enter_context(trace.use_span(span, end_on_exit=True))
    return stack


def recording(calls: int) -> float:
    """Microseconds per `Exemplars.waited()` in this process, with exemplars on and a sampled
    span current: what the tracker's waited path adds to a checkout that waited, besides its
    wait (the span read, the event, the exemplar, and in multiprocess mode its file)."""
    import sqlalchemy as sa

    import pool_exporter

    workdir = tempfile.mkdtemp(prefix="pool-exporter-bench-")
    atexit.register(shutil.rmtree, workdir, True)
    engine = sa.create_engine(f"sqlite:///{workdir}/bench.db", pool_size=5)
    handle = pool_exporter.instrument(engine, name="bench")
    engine.connect().close()  # the stats file, in multiprocess mode
    waits = (0.002, 0.02, 0.2, 2.0)  # four buckets, written in turn
    with exemplars_on():
        handle.exemplars.waited(0.002)
        assert handle.exemplars.latest["wait"][1] is not None, "no exemplar recorded"
        runs = timeit.repeat(
            lambda: [handle.exemplars.waited(w) for w in waits], number=calls // 4, repeat=7
        )
    return min(runs) / (calls // 4 * 4) * 1e6


def print_recording(calls: int) -> int:
    print("what a checkout that waited pays besides its wait: Exemplars.waited(), exemplars on,")
    print(f"a sampled SDK span current (fastest of 7 x {calls} calls)")
    for mode in ("single-process", "multiprocess"):
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        with tempfile.TemporaryDirectory() as mp_dir:
            if mode == "multiprocess":
                env["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
            code = (
                "import sys; sys.path.insert(0, 'bench'); import overhead; "
                f"print(overhead.recording({calls}))"
            )
            out = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
        print(f"{mode:<16}{float(out.stdout):>8.2f} us per waited checkout")
    return 0


def run_variant(variant: str, cycles: int, repeats: int, before: str | None = None) -> float:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if variant == "before" and before is not None:
        env["PYTHONPATH"] = before
    with tempfile.TemporaryDirectory() as mp_dir:
        if variant in MULTIPROCESS:
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


INTERLEAVED = ("baseline", "pool-exporter", "pool-exporter-multiprocess")
# What --route and --exemplars add, each an engine of its own compared with single-process
# mode turn by turn.
INTERLEAVED_EXTRA = ("pool-exporter-route", "pool-exporter-exemplars")


def interleaved(cycles: int, turns: int, extra: tuple[str, ...] = ()) -> dict[str, float]:
    """Median microseconds per cycle of each INTERLEAVED variant and of those of `extra`, all
    in this process; `paired <variant>`, the median of its turn-by-turn differences to
    single-process mode."""
    import sqlalchemy as sa

    import pool_exporter

    variants = (*INTERLEAVED, *extra)

    workdir = tempfile.mkdtemp(prefix="pool-exporter-bench-")

    atexit.register(shutil.rmtree, workdir, True)  # the SQLite file and stats files
    engines = {}
    for variant in variants:
        engine = sa.create_engine(f"sqlite:///{workdir}/{variant}.db", pool_size=5)
        if variant in ("pool-exporter", "pool-exporter-exemplars"):
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            pool_exporter.instrument(engine, name=variant)
        elif variant == "pool-exporter-multiprocess":
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(dir=workdir)
            pool_exporter.instrument(engine, name="bench-mp")
            assert engine.pool.connect.__closure__ is not None  # instrumented
        elif variant == "pool-exporter-route":
            os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            pool_exporter.instrument(engine, name="bench-route", route=ROUTE.get)
        engines[variant] = engine
    os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
    timers = {v: timeit.Timer(lambda e=e: e.connect().close()) for v, e in engines.items()}
    turn = {v: timer.timeit for v, timer in timers.items()}
    if "pool-exporter-exemplars" in turn:
        turn["pool-exporter-exemplars"] = _with_exemplars(timers["pool-exporter-exemplars"])
    for run in turn.values():
        run(2000)  # warm the pools and the code paths
    runs: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(turns):
        for variant, run in turn.items():
            runs[variant].append(run(cycles) / cycles * 1e6)
    out = {v: statistics.median(r) for v, r in runs.items()}
    # Each turn's modes ran a few milliseconds apart: their difference, turn by turn, is
    # what the machine's other load disturbs least.
    single = runs["pool-exporter"]
    for variant in ("pool-exporter-multiprocess", *extra):
        pairs = zip(runs[variant], single, strict=True)
        out[f"paired {variant}"] = statistics.median(v - one for v, one in pairs)
    return out


def _with_exemplars(timer: timeit.Timer) -> Callable[[int], float]:
    """`timer.timeit`, each call with enable_exemplars() on and a sampled span current; off
    again after it, for the other variants' turns."""
    from opentelemetry import trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.trace import TracerProvider

    import pool_exporter.otel

    pool_exporter.otel.enable(MeterProvider())
    span = TracerProvider().get_tracer("bench").start_span("request")

    def run(cycles: int) -> float:
        pool_exporter.otel.enable_exemplars()
        try:
            with trace.use_span(span):
                return timer.timeit(cycles)
        finally:
            pool_exporter.otel.disable_exemplars()

    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument(
        "--only", nargs="+", choices=VARIANTS, help="these variants (and the baseline)"
    )
    parser.add_argument("--before", help="a directory holding an older pool_exporter/")
    parser.add_argument("--interleaved", action="store_true")
    parser.add_argument(
        "--route", action="store_true", help="--interleaved: route= as well, beside single-process"
    )
    parser.add_argument("--turns", type=int, default=60)
    parser.add_argument("--exemplars", action="store_true", help="--interleaved: with exemplars")
    parser.add_argument(
        "--recording", action="store_true", help="what a waited checkout's exemplar costs"
    )
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    variants = {v: w for v, w in VARIANTS.items() if not args.only or v in {"baseline", *args.only}}
    if not args.before:
        variants.pop("before", None)
    if args.child:
        median, fastest = measure(args.child, args.cycles, args.repeats)
        print(json.dumps({"us": median, "min_us": fastest}))
        return 0
    if args.recording:
        return print_recording(args.cycles)
    if args.interleaved:
        extra = tuple(
            variant
            for variant, wanted in zip(INTERLEAVED_EXTRA, (args.route, args.exemplars), strict=True)
            if wanted
        )
        return print_interleaved(args.cycles, args.turns, args.rounds, extra)

    results: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            results[variant].append(run_variant(variant, args.cycles, args.repeats, args.before))
    base = statistics.median(results["baseline"])
    import sqlalchemy

    print(f"engine.connect().close() on a warm SQLite-file QueuePool, SQLAlchemy "
          f"{sqlalchemy.__version__}, Python {sys.version.split()[0]}")  # fmt: skip
    print(machine())
    print(f"median of {args.rounds} processes x {args.repeats} repeats x {args.cycles} cycles\n")
    print(f"{'variant':<28}{'us/cycle':>10}{'added us':>10}{'ratio':>8}  what")
    for variant, what in variants.items():
        us = statistics.median(results[variant])
        print(f"{variant:<28}{us:>10.2f}{us - base:>+10.2f}{us / base:>7.2f}x  {what}")
    return 0


# How print_interleaved names each variant's difference to single-process mode.
_MINUS = {
    "pool-exporter-multiprocess": "multiprocess minus single-process",
    "pool-exporter-route": "route= minus single-process",
    "pool-exporter-exemplars": "exemplars on minus off",
}


def print_interleaved(cycles: int, turns: int, rounds: int, extra: tuple[str, ...] = ()) -> int:
    """Each round in a process of its own; the table shows the median round."""
    results: dict[str, list[float]] = {}
    paired: dict[str, list[float]] = {}
    for _ in range(rounds):
        code = (
            "import json, sys; sys.path.insert(0, 'bench'); import overhead; "
            f"print(json.dumps(overhead.interleaved({cycles}, {turns}, {extra!r})))"
        )
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        for key, us in json.loads(out.stdout).items():
            into = paired if key.startswith("paired ") else results
            into.setdefault(key.removeprefix("paired "), []).append(us)
    import sqlalchemy

    print(f"engine.connect().close() on a warm SQLite-file QueuePool, SQLAlchemy "
          f"{sqlalchemy.__version__}, Python {sys.version.split()[0]}")  # fmt: skip
    print(machine())
    print(f"interleaved in one process: median of {rounds} processes x {turns} turns x "
          f"{cycles} cycles\n")  # fmt: skip
    base = statistics.median(results["baseline"])
    single = statistics.median(results["pool-exporter"])
    print(f"{'variant':<28}{'us/cycle':>10}{'added us':>10}{'ratio':>8}  per round (us)")
    for variant, values in results.items():
        us = statistics.median(values)
        rounds_text = " ".join(f"{v:.2f}" for v in values)
        print(f"{variant:<28}{us:>10.2f}{us - base:>+10.2f}{us / base:>7.2f}x  {rounds_text}")
    print()
    for variant, differences in paired.items():
        us = statistics.median(results[variant])
        per_round = " ".join(f"{p:+.2f}" for p in differences)
        print(f"{_MINUS[variant]}: {us - single:+.2f} us (of the medians); "
              f"{statistics.median(differences):+.2f} us (median of the turn-by-turn "
              f"differences; per round {per_round})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
