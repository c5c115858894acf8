"""At a steady 70 % utilisation the project's rules stay quiet: a real pool, a real
Prometheus evaluating the rules every second (the most eager setting), no alert firing."""

from __future__ import annotations

import statistics
import threading

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pool_exporter.durations import seconds
from pool_exporter.exposition import start_http_server
from pool_exporter.incident import replay as rp
from pool_exporter.incident.alertwatch import AlertWatch
from pool_exporter.incident.promserver import PrometheusServer
from pool_exporter.instrument import instrument

from .support.binaries import require_binary
from .support.project import RULES, project_file
from .support.prometheus import wait_for_evaluation

pytestmark = pytest.mark.slow

SETTINGS = rp.PoolSettings(5, 10, 30.0)
HOLD = rp.HoldTime(0.1, 0.2)
UTILISATION = 0.7


def test_no_alert_fires_during_a_steady_run_at_70_percent_utilisation() -> None:
    require_binary("prometheus")
    rules = project_file(RULES)
    waits = [
        seconds(r.get("for", "0s"))
        for g in yaml.safe_load(rules.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    # long enough for every alert's `for` to run out once, and never past a test's budget
    duration = min(90.0, max(30.0, max(waits, default=0.0) + 20.0))
    rate = UTILISATION * SETTINGS.capacity / HOLD.mean  # Little's law: A = λ·S
    steady = rp.Scenario(users=0, hold=HOLD, background_rate=rate, duration=duration, seed=3)
    registry = CollectorRegistry()
    with rp.pool_engine(None, SETTINGS) as (engine, _):
        handle = instrument(engine, name="steady", registry=registry)
        server, _ = start_http_server(0, "127.0.0.1", registry)
        try:
            with PrometheusServer(
                [f"127.0.0.1:{server.server_port}"], rule_files=[rules], interval=1.0
            ) as prom:
                prom.wait_for_scrape()
                with AlertWatch(prom.alerts) as watch:
                    runner = rp.Replay(engine, SETTINGS, steady, handle=handle)
                    results: list[rp.Result] = []
                    thread = threading.Thread(target=lambda: results.append(runner.run()))
                    thread.start()
                    thread.join(duration + 60)
                    wait_for_evaluation(prom)  # the last of the run is scraped and evaluated
                    watch.poll()
                fired = [a for a in watch.snapshot() if a.firing is not None]
        finally:
            server.shutdown()
            handle.uninstrument()
    result = results[0]
    busy = statistics.fmean(s.in_use for s in result.timeline[2:-1]) / SETTINGS.capacity
    assert 0.55 <= busy <= 0.85, f"the run was meant to keep the pool 70 % busy, not {busy:.0%}"
    assert result.timeouts == 0
    assert fired == [], f"alerts fired at {busy:.0%} utilisation: {fired}"
