"""What the oldest-checkout gauge and long_checkout_threshold add to a warm checkout + checkin.

Alternates single-process runs of bench/overhead.py's variants many times, with the code
before this feature (an older checkout given as --before, put first on PYTHONPATH) beside the
current code, and reports per variant the median and the fastest of the processes' fastest
repeats: on a shared machine the fastest run is the one least disturbed by other load.

    git archive 5c9a60e pool_exporter | tar -x -C /tmp/before    # the commit before it
    .venv/bin/python bench/long_checkouts.py --before /tmp/before [--turns 15]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

OVERHEAD = Path(__file__).with_name("overhead.py")

VARIANTS = {
    "baseline": ("baseline", False, "no instrumentation"),
    "before": ("pool-exporter", True, "instrument(engine), code before the gauge (--before)"),
    "gauge": ("pool-exporter", False, "instrument(engine): the oldest-checkout gauge on"),
    "threshold": ("pool-exporter-threshold", False, "the same, long_checkout_threshold=60"),
}


def run(variant: str, old: bool, before: str, cycles: int, repeats: int) -> tuple[float, float]:
    env = dict(os.environ)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if old:
        env["PYTHONPATH"] = before
    out = subprocess.run(
        [sys.executable, str(OVERHEAD), "--child", variant, "--cycles", str(cycles),
         "--repeats", str(repeats)],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    return float(result["us"]), float(result["min_us"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="a checkout without the feature")
    parser.add_argument("--turns", type=int, default=15)
    parser.add_argument("--cycles", type=int, default=10000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    medians: dict[str, list[float]] = {v: [] for v in VARIANTS}
    fastest: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.turns):
        for name, (variant, old, _) in VARIANTS.items():
            med, low = run(variant, old, args.before, args.cycles, args.repeats)
            medians[name].append(med)
            fastest[name].append(low)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"before: the package in {args.before}")
    print(f"{args.turns} turns x {args.repeats} repeats x {args.cycles} cycles; "
          f"load average at the end {' '.join(load)} on {os.cpu_count()} cores")  # fmt: skip
    base_med = statistics.median(medians["baseline"])
    base_min = min(fastest["baseline"])
    print(f"{'variant':<11}{'median us':>10}{'added':>8}{'fastest us':>11}{'added':>8}  what")
    for name, (_, _, what) in VARIANTS.items():
        med, low = statistics.median(medians[name]), min(fastest[name])
        added_med, added_min = med - base_med, low - base_min
        print(f"{name:<11}{med:>10.2f}{added_med:>+8.2f}{low:>11.2f}{added_min:>+8.2f}  {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
