"""The pooler between the pools and the database, on real components: the real PostgreSQL, a
real PgBouncer, the sidecar (a real `pool-exporter sidecar` process), a real Prometheus with
the project's rules, and the replay engine's burst through the pooler.

Transaction mode: the burst queues in the pooler while the database sees no more than the
pooler's pool size; the alerts fire in the order docs/runbooks.md gives. Session mode: the
database's connection count follows the fleet's pools (the incident's "we had a pooler and it
spiked anyway").
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from pool_exporter.cli import main
from pool_exporter.exposition import start_http_server
from pool_exporter.incident import replay as rp
from pool_exporter.incident.promserver import PrometheusServer
from pool_exporter.instrument import instrument
from pool_exporter.mixin import dashboards as d
from pool_exporter.mixin.config import MixinConfig

from .support import cli
from .support import pgbouncer as pgb
from .support.binaries import require_binary
from .support.procs import Procs, procs, start_sidecar
from .support.prometheus import wait_for_evaluation

__all__ = ["procs"]

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "alerts/pool-exporter.rules.yml"
JOB = "pool-exporter"  # PrometheusServer's job: the dashboards' $job
SCRAPE = 1.0
# The fleet: one pool of 5 + 5, pool timeout 8 s. Two server connections in the pooler.
FLEET = rp.PoolSettings(5, 5, 8.0)
POOLER_POOL_SIZE = 2
# 24 requests over a second, each holding its connection 1.5 s inside a transaction: the
# pooler serves 2 at a time (1.3 a second), so the fleet's 10 connections queue in it and the
# oldest waits more than half the pool timeout.
BURST = rp.Scenario(
    users=24, ramp=1.0, hold=rp.HoldTime(1.5, 1.5), push_at=2.0, seed=5,
    hold_in_transaction=True,
)  # fmt: skip
WARNING, PAGE = "PgBouncerPoolSaturated", "PgBouncerWaitNearPoolTimeout"


@dataclass
class Run:
    prom: PrometheusServer
    result: rp.Result | None = None
    firing: dict[str, float] = field(default_factory=dict)  # alertname: first seen, unix time
    answered: set[str] = field(default_factory=set)

    def peak(self, expr: str) -> float:
        found = self.prom.query(f"max_over_time(({expr})[5m:500ms])")
        assert found, f"no data for {expr}"
        return float(found[0]["value"][1])


def pooler_row_queries() -> dict[str, str]:
    """Every query of the dashboard's pooler row, with $job filled in as Grafana would."""
    _, panels = d.through_the_pooler(d.builder(MixinConfig()))
    found = {}
    for panel, _, _ in panels:
        for target in panel.targets:
            expr = target["expr"].replace("$job", JOB)
            assert "$" not in expr, expr
            found[f"{panel.title!r} {target['refId']}"] = expr
    return found


@contextmanager
def burst_through(
    tmp_path: Path,
    procs: Procs,
    pg_url: str,
    database: str,
    *,
    pool_mode: str,
    pool_size: int,
    scenario: rp.Scenario,
) -> Iterator[Run]:
    """The burst through a PgBouncer in `pool_mode`; the run with its Prometheus still up."""
    pgb.require()
    require_binary("prometheus")
    queries = pooler_row_queries()
    with pgb.running(pool_mode=pool_mode, pool_size=pool_size) as bouncer:
        poolers = tmp_path / "poolers"
        poolers.write_text(f"edge={bouncer.admin_url}\n")
        sidecar = start_sidecar(
            procs,
            tmp_path,
            f"--pgbouncer-url-file={poolers}",
            env={"POOL_EXPORTER_DATABASE_URL": pg_url},
        )
        registry = CollectorRegistry()
        with rp.pool_engine(bouncer.url(database), FLEET) as (engine, _):
            handle = instrument(engine, name="fleet", registry=registry)
            server, _thread = start_http_server(0, "127.0.0.1", registry)
            targets = [f"127.0.0.1:{server.server_port}", sidecar.url.removeprefix("http://")]
            try:
                with PrometheusServer(targets, rule_files=[RULES], interval=SCRAPE) as prom:
                    prom.wait_for_scrape()
                    runner = rp.Replay(engine, FLEET, scenario, handle=handle, pool_name="fleet")
                    results: list[rp.Result] = []
                    thread = threading.Thread(target=lambda: results.append(runner.run()))
                    thread.start()
                    run = Run(prom)
                    deadline = time.monotonic() + 120
                    while thread.is_alive() and time.monotonic() < deadline:
                        watch(run, queries)
                        time.sleep(SCRAPE / 2)
                    thread.join(30)
                    wait_for_evaluation(prom)  # the last of the run is scraped and evaluated
                    watch(run, queries)
                    run.result = results[0]
                    yield run
            finally:
                server.shutdown()
                handle.uninstrument()


def watch(run: Run, queries: dict[str, str]) -> None:
    now = time.time()
    for alert in run.prom.alerts():
        if alert["state"] == "firing":
            run.firing.setdefault(alert["labels"]["alertname"], now)
    for where, expr in queries.items():
        if where not in run.answered and run.prom.query(expr):
            run.answered.add(where)


def test_transaction_mode_queues_in_the_pooler_and_the_database_stays_at_its_pool_size(
    tmp_path: Path, procs: Procs, pg_url: str, pg_database: str, capsys: pytest.CaptureFixture[str]
) -> None:
    where = (tmp_path, procs, pg_url, pg_database)
    with burst_through(*where, pool_mode="transaction", pool_size=POOLER_POOL_SIZE,
                       scenario=BURST) as run:  # fmt: skip
        check_transaction_mode(run, pg_database)
        # advise reads the pooler from the same Prometheus and sizes it with the app's pool:
        # from the database's time per transaction (SHOW STATS), the 1.5 s hold, not the
        # app's hold, which the queue in the pooler made several times longer.
        capsys.readouterr()
        assert main(["advise", "--prometheus", run.prom.url, "--window", "1m"]) == 0
        out = capsys.readouterr().out
        assert "working (the stack)" in out, out
        found = re.search(r"hold mean ([\d.]+) s", out)
        service = re.search(r"database time S = ([\d.]+) s .* from the pooler's SHOW STATS", out)
        assert found and service, out
        assert float(service[1]) == pytest.approx(1.5, abs=0.3) and float(found[1]) > 3, out
        assert (
            f"(today {POOLER_POOL_SIZE})" in out
            and "recommend the pooler's default_pool_size=" in out
            and "max_client_conn=100" in out
        ), out


def check_transaction_mode(run: Run, database: str) -> None:
    db = f'database="{database}"'
    fleet_peak = run.peak('sum(sqlalchemy_pool_connections{state="in_use"})')
    waiting_peak = run.peak(
        f'sum(pool_exporter_pgbouncer_client_connections{{state="waiting",{db}}})'
    )
    database_peak = run.peak(f"sum(pool_exporter_database_connections{{{db}}})")
    servers_peak = run.peak(f"sum(pool_exporter_pgbouncer_server_connections{{{db}}})")
    print(
        f"\ntransaction mode: fleet in use peak {fleet_peak:g}, clients waiting in the pooler "
        f"peak {waiting_peak:g}, server connections peak {servers_peak:g}, database "
        f"connections peak {database_peak:g} (pool size {POOLER_POOL_SIZE})"
    )
    assert fleet_peak == FLEET.capacity
    assert waiting_peak >= FLEET.capacity - POOLER_POOL_SIZE - 2
    assert database_peak == servers_peak == POOLER_POOL_SIZE
    assert run.peak(f"max(pool_exporter_pgbouncer_client_wait_max_seconds{{{db}}})") >= 1

    # The warning first, then the page, as docs/runbooks.md tells them.
    assert WARNING in run.firing and PAGE in run.firing, run.firing
    assert run.result is not None
    push = run.result.started_at + run.result.push_at
    print(
        f"{WARNING} firing {run.firing[WARNING] - push:.1f} s after the push started, "
        f"{PAGE} {run.firing[PAGE] - push:.1f} s (scrape and evaluation every {SCRAPE:g} s)"
    )
    assert run.firing[WARNING] < run.firing[PAGE]

    missing = set(pooler_row_queries()) - run.answered
    assert not missing, f"dashboard queries without data: {sorted(missing)}"


def test_session_mode_lets_the_fleet_through_to_the_database(
    tmp_path: Path, procs: Procs, pg_url: str, pg_database: str
) -> None:
    # The pooler's pool as large as the incident's (larger than the fleet): session mode
    # gives each of the pools' connections a server connection of its own.
    burst = rp.Scenario(users=40, ramp=1.0, hold=rp.HoldTime(0.3, 0.3), push_at=2.0)
    where = (tmp_path, procs, pg_url, pg_database)
    with burst_through(*where, pool_mode="session", pool_size=50, scenario=burst) as run:
        check_session_mode(run, pg_database)


def check_session_mode(run: Run, database: str) -> None:
    db = f'database="{database}"'
    fleet_peak = run.peak("sum(sqlalchemy_pool_connections)")
    database_peak = run.peak(f"sum(pool_exporter_database_connections{{{db}}})")
    print(f"\nsession mode: fleet open peak {fleet_peak:g}, database peak {database_peak:g}")
    assert fleet_peak == FLEET.capacity
    assert database_peak == fleet_peak
    info = run.prom.query(f'pool_exporter_pgbouncer_database_info{{{db},pool_mode="session"}}')
    assert info, "the database's pool mode is exported"


def test_replay_runs_through_pgbouncer_in_transaction_mode(pg_url: str) -> None:
    pgb.require()
    with pgb.running(pool_mode="transaction", pool_size=3) as bouncer:
        result = cli.run(
            "replay",
            f"--database-url={bouncer.url()}",
            *("--users", "300", "--ramp", "1", "--hold-median", "0.01"),
            *("--hold-p95", "0.01", "--pool-size", "5", "--max-overflow", "5"),
            "--hold-in-transaction",
            timeout=120,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every request ran its queries inside a transaction through the pooler, none failed.
    assert "requests        300 (300 ok, 0 timed out, 0 errors)" in result.stdout


def test_demo_runs_through_pgbouncer_in_transaction_mode(pg_url: str, tmp_path: Path) -> None:
    pgb.require()
    with pgb.running(pool_mode="transaction", pool_size=3) as bouncer:
        result = cli.run(
            "demo",
            f"--database-url={bouncer.url()}",
            *("--users", "100", "--duration", "4", "--no-prometheus"),
            *("--port", "0", "--out", str(tmp_path / "demo.png")),
            timeout=120,
            cwd=tmp_path,
        )
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 errors)" in result.stdout, result.stdout
    assert (tmp_path / "demo.png").is_file()
