"""Scrape time and memory of `pool-exporter sidecar` with 1, 8 and 64 live workers.

    .venv/bin/python bench/sidecar_scrape.py [--workers 1 8 64] [--pools 10] [--scrapes 30]
    .venv/bin/python bench/sidecar_scrape.py --workers 4 --dead 0 5000 [--pools 2]
    .venv/bin/python bench/sidecar_scrape.py --workers 64 --openmetrics [--exemplars]

For each worker count, a writer process forks that many workers; each instruments `--pools`
SQLite engines, checks every pool out a few times and stays alive (so its gauges stay, as a
live worker's do). The real sidecar then serves the directory and is scraped `--scrapes` times.
Reported: the scrape as the client sees it (median and worst), the sidecar's own
reap-and-merge time (pool_exporter_multiprocess_scrape_duration_seconds), the CPU time the
sidecar spent per scrape (its process_cpu_seconds_total over the scrapes: unlike the wall
times, hardly moved by other processes sharing the machine), the size of the answer, and the
sidecar's resident memory after the scrapes (VmRSS, and its peak VmHWM).

To compare with another version's code in the same run, run this file with that version's
package first on the path: `PYTHONPATH=/path/to/other/checkout python bench/sidecar_scrape.py`.

`--openmetrics` scrapes with Prometheus' Accept header (the OpenMetrics format, which it asks
for first); `--exemplars` makes each worker check its pools out inside a sampled span with
pool_exporter.otel.enable_exemplars(min_wait=0), so every pool has an exemplar file and each
wait histogram an exemplar in its first bucket, as a fleet with exemplars on would.

`--dead N` first lets N more workers live and exit (every other one by SIGKILL), as gunicorn's
max_requests, crashes and deploys do. The first scrape folds their counts into the archive
(reported apart); the scrapes after it are the steady state. `files` counts every file left
in the directory after the scrapes.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pool_exporter.incident.promserver import free_port

BIN = Path(sys.executable).parent
# What Prometheus 2.42 sends: OpenMetrics first.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)


def write_workers(
    directory: str, workers: int, pools: int, dead: int, exemplars: bool = False
) -> None:
    """The writer: fork `workers` instrumented processes and `dead` that exit, report, wait
    for stdin to close."""
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory  # before prometheus-client is imported
    import contextlib

    import sqlalchemy as sa

    from pool_exporter import instrument

    span: Any = contextlib.nullcontext
    if exemplars:
        from opentelemetry.sdk.trace import TracerProvider

        import pool_exporter.otel

        pool_exporter.otel.enable_exemplars(min_wait=0.0)
        tracer = TracerProvider().get_tracer("bench")
        span = lambda: tracer.start_as_current_span("request")  # noqa: E731

    def work() -> None:
        engines = [sa.create_engine("sqlite://") for _ in range(pools)]
        for n, engine in enumerate(engines):
            instrument(engine, name=f"pool{n}")
            for _ in range(5):
                with span(), engine.connect() as conn:
                    conn.exec_driver_sql("SELECT 1")

    for n in range(dead):
        pid = os.fork()
        if pid == 0:
            work()
            if n % 2:
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(0)
        os.waitpid(pid, 0)
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            work()
            os.write(1, b"ready\n")
            sys.stdin.read()
            os._exit(0)
        children.append(pid)
    sys.stdin.read()
    for pid in children:
        os.waitpid(pid, 0)


def memory(pid: int) -> tuple[float, float]:
    """VmRSS and VmHWM of `pid`, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.split()
    return int(fields["VmRSS"][0]) / 1024, int(fields["VmHWM"][0]) / 1024


def measure(
    workers: int, pools: int, scrapes: int, dead: int, *, openmetrics: bool, exemplars: bool
) -> dict[str, float]:
    import httpx
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
    from prometheus_client.parser import text_string_to_metric_families

    parse = om_parse if openmetrics else text_string_to_metric_families
    accept = {"Accept": PROMETHEUS_ACCEPT} if openmetrics else {}
    with tempfile.TemporaryDirectory() as directory:
        recording = "exemplars" if exemplars else ""
        arguments = [directory, str(workers), str(pools), str(dead), recording]
        writer = subprocess.Popen(
            [sys.executable, __file__, "--write", *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert writer.stdout is not None and writer.stdin is not None
        for _ in range(workers):
            assert writer.stdout.readline().strip() == "ready"
        port = free_port()
        sidecar = subprocess.Popen(
            [str(BIN / "pool-exporter"), "--log-level=warning", "sidecar",
             f"--web.listen-address=127.0.0.1:{port}", f"--multiproc-dir={directory}"],
            env={**os.environ, "POOL_EXPORTER_DATABASE_URL": ""},
        )  # fmt: skip
        try:
            url = f"http://127.0.0.1:{port}/metrics"
            with httpx.Client(timeout=30) as client:
                for _ in range(200):
                    try:  # not the metrics: the first scrape is the one that folds
                        client.get(url.replace("/metrics", "/-/healthy"))
                        break
                    except httpx.HTTPError:
                        time.sleep(0.05)
                t0 = time.perf_counter()
                client.get(url, headers=accept)  # warm-up, and the fold of the dead workers
                first = time.perf_counter() - t0
                rss_before, _ = memory(sidecar.pid)
                times, merge, cpu, size, series = [], [], [], 0, 0
                for _ in range(scrapes):
                    t0 = time.perf_counter()
                    response = client.get(url, headers=accept)
                    times.append(time.perf_counter() - t0)
                    size = len(response.content)
                    families = list(parse(response.text))
                    series = sum(len(f.samples) for f in families)
                    for f in families:
                        if f.name == "pool_exporter_multiprocess_scrape_duration_seconds":
                            merge.append(f.samples[0].value)
                        if f.name in ("process_cpu_seconds", "process_cpu_seconds_total"):
                            cpu.append(f.samples[0].value)
                rss, hwm = memory(sidecar.pid)
                files = len(os.listdir(directory))
        finally:
            sidecar.terminate()
            sidecar.wait(10)
            writer.stdin.close()
            writer.wait(30)
    return {
        "workers": workers,
        "dead": dead,
        "first_ms": first * 1000,
        "files": files,
        "series": series,
        "kib": size / 1024,
        "median_ms": statistics.median(times) * 1000,
        "max_ms": max(times) * 1000,
        "merge_ms": statistics.median(merge) * 1000,
        "cpu_ms": (cpu[-1] - cpu[0]) / (len(cpu) - 1) * 1000,
        "rss_idle_mib": rss_before,
        "rss_mib": rss,
        "hwm_mib": hwm,
    }


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--write":
        write_workers(
            sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), bool(sys.argv[6])
        )
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 8, 64])
    parser.add_argument("--pools", type=int, default=10)
    parser.add_argument("--scrapes", type=int, default=30)
    parser.add_argument("--dead", type=int, nargs="+", default=[0])
    parser.add_argument("--openmetrics", action="store_true", help="scrape as Prometheus does")
    parser.add_argument("--exemplars", action="store_true", help="an exemplar in every pool")
    args = parser.parse_args()
    python = sys.version.split()[0]
    print(f"{args.pools} pools per worker, {args.scrapes} scrapes each, Python {python}")
    header = ("workers", "dead", "files", "series", "KiB", "first scrape ms", "scrape median ms",
              "scrape max ms", "merge median ms", "CPU ms per scrape", "RSS MiB",
              "peak RSS MiB", "load average")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---:|" * len(header))
    for workers in args.workers:
        for dead in args.dead:
            r = measure(
                workers,
                args.pools,
                args.scrapes,
                dead,
                openmetrics=args.openmetrics,
                exemplars=args.exemplars,
            )
            print(
                f"| {r['workers']} | {r['dead']} | {r['files']} | {r['series']} | {r['kib']:.0f} "
                f"| {r['first_ms']:.1f} | {r['median_ms']:.1f} | {r['max_ms']:.1f} "
                f"| {r['merge_ms']:.1f} | {r['cpu_ms']:.1f} "
                f"| {r['rss_mib']:.1f} | {r['hwm_mib']:.1f} | {os.getloadavg()[0]:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
