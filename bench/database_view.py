"""Time of the sidecar's database view per scrape against the real PostgreSQL, for this code
and, in the same run, another version's (its queries by application, role and database).

    .venv/bin/python bench/database_view.py [--url URL] [--scrapes 200] [--rounds 5]
        [--against /path/to/other/checkout]

Each round collects `--scrapes` times in a fresh process for each version in turn (this one,
then `--against`'s, whose package comes first on that process's path), on one kept connection
as the sidecar does, after one scrape that opens it. Reported per version: the median and the
90th percentile of the collector's own scrape time (pool_exporter_database_scrape_duration_
seconds) over every round, and the ratio of the medians. The server's other clients count: the
more sessions and roles it has, the longer pg_stat_activity takes to read.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

URL = os.environ.get("POOL_EXPORTER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
ROOT = Path(__file__).resolve().parent.parent


def measure(url: str, scrapes: int) -> list[float]:
    """Seconds each collect() of one DatabaseCollector took, on a connection already open."""
    from prometheus_client.registry import CollectorRegistry

    from pool_exporter.sidecar.database import DatabaseCollector

    collector = DatabaseCollector(url)
    registry = CollectorRegistry()
    registry.register(collector)
    registry.get_sample_value("pool_exporter_database_up")  # opens the kept connection
    times = []
    for _ in range(scrapes):
        times.append(registry.get_sample_value("pool_exporter_database_scrape_duration_seconds"))
    collector.close()
    return [float(t) for t in times if t is not None]


def run(checkout: Path, url: str, scrapes: int) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    code = f"import json, sys; sys.path.append({str(ROOT / 'bench')!r}); "
    code += "import pool_exporter; assert pool_exporter.__file__.startswith(sys.argv[1]); "
    code += f"import database_view as b; print(json.dumps(b.measure({url!r}, {scrapes})))"
    # Run from the checkout: `python -c` puts the working directory first on the path.
    out = subprocess.run(
        [sys.executable, "-c", code, str(checkout)],
        env=env,
        cwd=checkout,
        capture_output=True,
        text=True,
        check=True,
    )
    return list(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=URL)
    parser.add_argument("--scrapes", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--against", type=Path, help="another checkout to measure in turn")
    args = parser.parse_args()
    versions = {"this code": ROOT, **({"against": args.against} if args.against else {})}
    times: dict[str, list[float]] = {name: [] for name in versions}
    for _ in range(args.rounds):
        for name, checkout in versions.items():
            times[name] += run(checkout, args.url, args.scrapes)
    medians = {}
    for name, found in times.items():
        found.sort()
        medians[name] = statistics.median(found)
        p90 = found[int(0.9 * (len(found) - 1))]
        print(
            f"{name:>10}: median {medians[name] * 1000:.2f} ms, p90 {p90 * 1000:.2f} ms "
            f"({len(found)} scrapes)"
        )
    if args.against:
        print(f"ratio of the medians: {medians['this code'] / medians['against']:.2f}x")


if __name__ == "__main__":
    main()
