"""The whole chain on real components: an instrumented pool on the real PostgreSQL, a real
Prometheus scraping it every second with the project's rules, a real Alertmanager with the
project's example config, and a webhook standing in for the pager and the chat.

A push overwhelms the incident's pool (5 + 10 connections, pool timeout shortened to 8 s).
The warning must reach the webhook before the application sees its first pool timeout, the
page must follow, every dashboard query must return data, and the same push replayed with the
settings `advise` recommends must not time out at all.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pool_exporter.cli import main
from pool_exporter.events import mark_event
from pool_exporter.exposition import start_http_server
from pool_exporter.incident import replay as rp
from pool_exporter.incident.promserver import PrometheusServer
from pool_exporter.instrument import instrument
from pool_exporter.sidecar.database import DatabaseCollector
from tests.support import dashboard_queries as dq
from tests.support import pg_limits
from tests.support.alertmanager import AlertmanagerServer, WebhookReceiver, route_to_webhook

from .support.binaries import require_binary
from .support.project import ROOT, RULES, project_file

AM_EXAMPLE = Path(
    os.environ.get("POOL_EXPORTER_E2E_ALERTMANAGER", ROOT / "alerts/alertmanager.example.yml")
)
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))

# The advised settings use nearly every connection the database allows, and the advice comes
# from a replay measured on this machine: nothing else may run beside this module.
pytestmark = [pytest.mark.slow, pytest.mark.serial]

POOL = "e2e"
SCRAPE = 1.0
INCIDENT = rp.PoolSettings(5, 10, 8.0)
# 20 requests/s of steady traffic, then 1,500 users in 3 s holding a connection 0.1 s at the
# median: 15 connections serve about 120 a second, so the queue outlives the 8 s timeout.
PUSH = rp.Scenario(
    users=1500, ramp=3.0, hold=rp.HoldTime(0.1, 0.3), background_rate=20.0, duration=24.0,
    push_at=8.0, seed=11,
)  # fmt: skip
# Grafana's variables, as the dashboard would fill them for this run: one job, every
# instance and worker, this pool; $__rate_interval is 4 scrape intervals.
VARIABLES = {
    "job": "pool-exporter",
    "instance": ".*",
    "pool": POOL,
    "worker": ".*",
    "__rate_interval": "4s",
    "__interval": "1s",
    "__range": "1m",
}


def substitute(expr: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in VARIABLES:
            pytest.fail(f"dashboard query uses an unknown variable ${name}: {expr}")
        return VARIABLES[name]

    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)", value, expr)


def dashboard_queries() -> dict[str, str]:
    """{where: PromQL} for every panel target, annotation and variable of every dashboard."""
    found: dict[str, str] = {}
    for path in DASHBOARDS:
        for where, query in dq.queries(json.loads(path.read_text())):
            if "pool_exporter_pgbouncer_" in query:
                continue  # no pooler in this run: tests/test_pgbouncer_end_to_end.py
            found[f"{path.name}: {where}"] = substitute(dq.as_promql(where, query))
    return found


def alertmanager_config(tmp: Path, webhook: str) -> Path:
    """The project's example config with every receiver posting to the test's webhook and
    its waits shortened: the routes, grouping and inhibitions are the ones under test."""
    config = yaml.safe_load(project_file(AM_EXAMPLE).read_text())
    config["templates"] = [str(AM_EXAMPLE.parent / t) for t in config.get("templates", [])]
    timing = {"group_wait": "0s", "group_interval": "1s", "repeat_interval": "1h"}
    path = tmp / "alertmanager.yml"
    path.write_text(yaml.safe_dump(route_to_webhook(config, webhook, timing=timing)))
    check = subprocess.run(
        [require_binary("amtool"), "check-config", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    return path


@dataclass
class Run:
    prometheus: PrometheusServer
    webhook: WebhookReceiver
    result: rp.Result
    first_timeout_at: float  # unix time
    queries: dict[str, str]
    answered: set[str]
    severities: dict[str, str]


@pytest.fixture(scope="module")
def run(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    for binary in ("prometheus", "prometheus-alertmanager", "amtool"):
        require_binary(binary)
    rules = project_file(RULES)
    severities = {
        r["alert"]: r.get("labels", {}).get("severity", "")
        for g in yaml.safe_load(rules.read_text())["groups"]
        for r in g["rules"]
        if "alert" in r
    }
    if not DASHBOARDS:
        project_file(ROOT / "dashboards/pool-exporter.json")
    queries = dashboard_queries()
    tmp = tmp_path_factory.mktemp("e2e")
    registry = CollectorRegistry()
    database = DatabaseCollector(pg_url)
    registry.register(database)
    with (
        # a role and a database with connection limits, for the limits' panels to show
        pg_limits.limited_role(pg_url),
        pg_limits.limited_database(pg_url) as limited,
        pg_limits.connect(pg_url, dbname=limited),
        rp.pool_engine(pg_url, INCIDENT) as (engine, _),
        WebhookReceiver() as webhook,
        AlertmanagerServer(alertmanager_config(tmp, webhook.url)) as am,
    ):
        # route=: the dashboard's panels of who holds the connections show the push's route
        handle = instrument(engine, name=POOL, registry=registry, route=lambda: "/push")
        server, _ = start_http_server(0, "127.0.0.1", registry)
        target = f"127.0.0.1:{server.server_port}"
        prom = PrometheusServer(
            [target], rule_files=[rules], interval=SCRAPE, alertmanagers=[am.address]
        )
        with prom:
            prom.wait_for_scrape()

            def mark_push(sample: rp.Sample, result: rp.Result) -> None:
                if sample.t >= PUSH.push_at and not getattr(mark_push, "done", False):
                    mark_push.done = True  # type: ignore[attr-defined]
                    mark_event("push", registry=registry)

            runner = rp.Replay(
                engine, INCIDENT, PUSH, handle=handle, on_sample=mark_push, pool_name=POOL
            )
            results: list[rp.Result] = []
            thread = threading.Thread(target=lambda: results.append(runner.run()))
            thread.start()
            answered: set[str] = set()
            deadline = time.monotonic() + 120
            while thread.is_alive() and time.monotonic() < deadline:
                for where, expr in queries.items():
                    if where not in answered and prom.query(expr):
                        answered.add(where)
                time.sleep(SCRAPE)
            thread.join(30)
            result = results[0]
            assert result.first_timeout is not None, "the push must overwhelm the pool"
            first_timeout_at = result.started_at + result.push_at + result.first_timeout
            # the page may trail the first timeout by an evaluation or two
            critical = [a for a, s in severities.items() if s == "critical"]
            wait_until = time.monotonic() + 15
            while time.monotonic() < wait_until and not any(webhook.first(a) for a in critical):
                time.sleep(0.5)
            rp.write_json(result, str(tmp / "push.json"))
            yield Run(prom, webhook, result, first_timeout_at, queries, answered, severities)
        server.shutdown()
        handle.uninstrument()
    database.close()


def first_of(run: Run, severity: str) -> tuple[str, float] | None:
    """The first alert of `severity` that reached the webhook: (name, arrival unix time)."""
    arrivals = [
        (name, note.at)
        for name, sev in run.severities.items()
        if sev == severity and (note := run.webhook.first(name)) is not None
    ]
    return min(arrivals, key=lambda a: a[1], default=None)


def test_the_warning_reaches_the_webhook_before_the_first_pool_timeout(run: Run) -> None:
    warning = first_of(run, "warning")
    received = [(n.receiver, sorted(n.names())) for n in run.webhook.received()]
    assert warning is not None, f"no warning reached the webhook; it received {received}"
    name, at = warning
    lead = run.first_timeout_at - at
    print(
        f"\nlead time: {name} reached the webhook {lead:.1f} s before the first pool timeout "
        f"({at - run.result.started_at - run.result.push_at:.1f} s after the push started, "
        f"scrape and evaluation every {SCRAPE:g} s, pool_timeout {INCIDENT.pool_timeout:g} s)"
    )
    assert lead > 0


def test_the_page_reaches_the_webhook_once_timeouts_happen(run: Run) -> None:
    critical = first_of(run, "critical")
    received = [(n.receiver, sorted(n.names())) for n in run.webhook.received()]
    assert critical is not None, f"no critical alert reached the webhook; it received {received}"
    name, at = critical
    print(f"\npage: {name} reached the webhook {at - run.first_timeout_at:+.1f} s from the "
          "first pool timeout")  # fmt: skip
    # within a few evaluations of the first timeout, or earlier
    assert at - run.first_timeout_at < 10 * SCRAPE
    warning = first_of(run, "warning")
    assert warning is not None
    pager = {n.receiver for n in run.webhook.received() if name in n.names()}
    chat = {n.receiver for n in run.webhook.received() if warning[0] in n.names()}
    assert pager and chat and pager != chat, "critical and warning go to different receivers"


def test_every_dashboard_query_returned_data_during_the_run(run: Run) -> None:
    missing = {w: q for w, q in run.queries.items() if w not in run.answered}
    assert run.queries and not missing, f"no data for: {json.dumps(missing, indent=1)}"


def test_the_push_replayed_with_the_advised_settings_does_not_time_out(
    run: Run, pg_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    push = tmp_path / "push.json"
    rp.write_json(run.result, str(push))
    max_connections = run.prometheus.query("max(pool_exporter_database_max_connections)")
    limit = str(int(float(max_connections[0]["value"][1])))
    code = main(
        ["advise", "--from-replay", str(push), "--database-max-connections", limit, "--json", "-"]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    advice = json.loads(out[out.index("\n[") :])[0]["advice"]
    assert not advice["exhausts_database"]
    advised = rp.PoolSettings(advice["pool_size"], advice["max_overflow"], advice["pool_timeout"])
    print(f"\nadvised: {advised} (was {INCIDENT})")
    again = rp.replay(PUSH, advised, database_url=pg_url, registry=CollectorRegistry())
    assert again.requests == run.result.requests
    assert (again.timeouts, again.errors) == (0, 0)
