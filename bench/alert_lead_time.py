"""Alert lead time before the first pool timeout, measured: real Prometheus, real rules.

For each scrape/evaluation interval and arrival ramp, `--runs` runs of the incident on a
fresh SQLite pool (5 + 10 connections, pool_timeout 30 s, steady traffic, then 2,000 users
over the ramp) with a real Prometheus scraping it and evaluating the rules at that interval.
The lead time is the first timeout's time minus the time Prometheus first reported each alert
firing (polled every 0.25 s; Alertmanager and the notification add their group_wait on top);
negative is after the first timeout. Each run prints a JSON line, then a table of the first
warning and the first page (the earliest alert of each severity) per run.

    .venv/bin/python bench/alert_lead_time.py [--rules alerts/pool-exporter.rules.yml]
        [--intervals 1 5 15] [--ramps 0 3 10] [--runs 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from prometheus_client.registry import CollectorRegistry

from pool_exporter.exposition import start_http_server
from pool_exporter.incident import replay as rp
from pool_exporter.incident.alertwatch import AlertWatch
from pool_exporter.incident.promserver import PrometheusServer
from pool_exporter.instrument import instrument

HOLD = rp.HoldTime(0.3, 1.2)  # the demo's
SETTINGS = rp.PoolSettings(5, 10, 30.0)


def one_run(rules: Path, interval: float, ramp: float, users: int) -> dict[str, Any]:
    # enough steady history before the push for rate() windows at this interval
    push_at = max(10.0, 4 * interval)
    scenario = rp.Scenario(
        users=users, ramp=ramp, hold=HOLD, background_rate=10.0,
        duration=push_at + ramp + SETTINGS.pool_timeout + 5, push_at=push_at,
    )  # fmt: skip
    registry = CollectorRegistry()
    with rp.pool_engine(None, SETTINGS) as (engine, _):
        handle = instrument(engine, name="bench", registry=registry)
        server, _ = start_http_server(0, "127.0.0.1", registry)
        target = f"127.0.0.1:{server.server_port}"
        with PrometheusServer([target], rule_files=[rules], interval=interval) as prom:
            prom.wait_for_scrape(timeout=3 * interval + 10)
            zero = time.monotonic()
            with AlertWatch(prom.alerts, zero=zero) as watch:
                runner = rp.Replay(engine, SETTINGS, scenario, handle=handle, pool_name="bench")
                offset = time.monotonic() - zero
                result = runner.run()
                time.sleep(2 * interval)
            alerts = watch.snapshot()
        server.shutdown()
        handle.uninstrument()
    first = None if result.first_timeout is None else result.first_timeout + result.push_at
    return {
        "interval": interval,
        "ramp": ramp,
        "users": users,
        "first_timeout_after_push": result.first_timeout,
        "timeouts": result.timeouts,
        "alerts": {
            a.name: {
                "severity": a.severity,
                "fired_after_push": None if a.firing is None else round(
                    a.firing - offset - result.push_at, 2),
                "lead": None if a.firing is None or first is None else round(
                    first - (a.firing - offset), 2),
            }
            for a in alerts
        },
    }  # fmt: skip


def first(row: dict[str, Any], severity: str) -> tuple[str, float] | None:
    """The alert of `severity` that fired first in a run, and its lead time."""
    fired = [
        (a["lead"], name)
        for name, a in row["alerts"].items()
        if a["severity"] == severity and a["lead"] is not None
    ]
    if not fired:
        return None
    lead, name = max(fired)
    return name, lead


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| interval | ramp | first timeout after push | warning lead | page lead (first page) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        cells = []
        for severity in ("warning", "critical"):
            found = first(row, severity)
            cells.append("none" if found is None else f"{found[1]:+.1f} s ({found[0]})")
        timeout = row["first_timeout_after_push"]
        lines.append(
            f"| {row['interval']:g} s | {row['ramp']:g} s | "
            f"{'none' if timeout is None else f'{timeout:.1f} s'} | {cells[0]} | {cells[1]} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=Path, default=Path("alerts/pool-exporter.rules.yml"))
    parser.add_argument("--intervals", type=float, nargs="+", default=[1.0, 5.0, 15.0])
    parser.add_argument("--ramps", type=float, nargs="+", default=[0.0, 3.0, 10.0])
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=1, help="runs per interval and ramp")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    for interval in args.intervals:
        for ramp in args.ramps:
            for _ in range(args.runs):
                row = one_run(args.rules, interval, ramp, args.users)
                rows.append(row)
                print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
