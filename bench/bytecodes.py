"""Python bytecode instructions per warm checkout + checkin (`engine.connect().close()`).

Time is what counts (bench/overhead.py), but on a machine shared with other load two timings
of the same code differ by more than a change to the hot path does. The number of bytecode
instructions a cycle executes does not depend on the load: equal counts for two versions of
the hot path mean the same Python work, and a count that grew says where time may have gone.
It misses what happens inside C (a clock read, a dict lookup, a lock): it is a check beside
the timings, not a replacement for them.

    .venv/bin/python bench/bytecodes.py [--before DIR]   # DIR holds an older pool_exporter/
    git archive 78fd968 pool_exporter | tar -x -C /tmp/before    # e.g.

Each variant runs in a process of its own (the older package first on PYTHONPATH for
`before`), with a tracer counting the opcodes of 100 warm cycles.
"""

from __future__ import annotations

import argparse
import atexit
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
from contextvars import ContextVar
from pathlib import Path
from types import FrameType
from typing import Any

VARIANTS = {
    "baseline": "no instrumentation",
    "pool-exporter": "pool_exporter.instrument(engine)",
    "pool-exporter-threshold": "the same, long_checkout_threshold=60",
    "pool-exporter-multiprocess": "the same, PROMETHEUS_MULTIPROC_DIR set",
    "pool-exporter-route": "the same, route= a ContextVar's get",
    "pool-exporter-exemplars": "the same as pool-exporter, otel.enable_exemplars(), in a span",
    "before": "pool_exporter.instrument(engine), the package in --before",
}
CYCLES = 100


def count(variant: str) -> dict[str, float]:
    """Opcodes per cycle in this process: the total, and per file:function."""
    import sqlalchemy as sa

    workdir = tempfile.mkdtemp(prefix="pool-exporter-bench-")

    atexit.register(shutil.rmtree, workdir, True)  # the SQLite file and stats files
    engine = sa.create_engine(f"sqlite:///{workdir}/bench.db", pool_size=5)
    if variant != "baseline":
        import pool_exporter

        threshold = 60.0 if variant == "pool-exporter-threshold" else None
        if variant == "pool-exporter-route":
            route: ContextVar[str] = ContextVar("route", default="/orders/{id}")
            pool_exporter.instrument(engine, name="bench", route=route.get)
        else:  # without route=, so that an older checkout can be counted as well
            pool_exporter.instrument(engine, name="bench", long_checkout_threshold=threshold)
    if variant == "pool-exporter-exemplars":  # the checkouts of a request, as overhead.py's
        sys.path.insert(0, str(Path(__file__).parent))
        from overhead import exemplars_on

        atexit.register(exemplars_on().close)
    for _ in range(CYCLES):  # warm: the first checkouts open connections
        engine.connect().close()
    counts: collections.Counter[str] = collections.Counter()

    def tracer(frame: FrameType, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        frame.f_trace_lines = False
        if event == "opcode":
            code = frame.f_code
            counts[f"{Path(code.co_filename).name}:{code.co_name}"] += 1
        return tracer

    sys.settrace(tracer)
    for _ in range(CYCLES):
        engine.connect().close()
    sys.settrace(None)
    found = {where: n / CYCLES for where, n in counts.most_common()}
    return {"total": sum(found.values()), **found}


def run(variant: str, before: str | None) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if variant == "before" and before is not None:
        env["PYTHONPATH"] = before
    with tempfile.TemporaryDirectory() as mp_dir:
        if variant == "pool-exporter-multiprocess":
            env["PROMETHEUS_MULTIPROC_DIR"] = mp_dir
        out = subprocess.run(
            [sys.executable, __file__, "--child", variant],
            env=env, capture_output=True, text=True, check=True,
        )  # fmt: skip
    result: dict[str, float] = json.loads(out.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="a directory holding an older pool_exporter/")
    parser.add_argument("--by-function", action="store_true", help="where the opcodes run")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(count("pool-exporter" if args.child == "before" else args.child)))
        return 0
    variants = [v for v in VARIANTS if v != "before" or args.before]
    results = {v: run(v, args.before) for v in variants}
    base = results["baseline"]["total"]
    print(f"Python opcodes per warm engine.connect().close(), mean of {CYCLES} cycles")
    print(f"{'variant':<28}{'opcodes':>9}{'added':>8}  what")
    for variant in variants:
        total = results[variant]["total"]
        print(f"{variant:<28}{total:>9.1f}{total - base:>+8.1f}  {VARIANTS[variant]}")
    if args.by_function:
        for variant in variants[1:]:
            print(f"\n{variant}: where the opcodes beyond the baseline's run")
            for where, n in results[variant].items():
                extra = n - results["baseline"].get(where, 0.0)
                if where != "total" and extra:
                    print(f"{extra:>+8.1f}  {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
