"""The Grafana dashboard: well formed for Grafana 10/11, committed as generated, and every query
checked against a real Prometheus scraping real instrumented engines."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client import CollectorRegistry, start_http_server

import pool_exporter
from pool_exporter import cli
from pool_exporter import metrics as m
from pool_exporter.events import mark_event
from pool_exporter.incident.promserver import PrometheusServer, QueryError
from pool_exporter.mixin import dashboards as d
from pool_exporter.mixin.config import MixinConfig
from pool_exporter.mixin.grafana import render, walk_panels
from pool_exporter.mixin.promql import WORKER
from pool_exporter.mixin.records import record_names
from pool_exporter.mixin.rule_files import RULES_FILE
from pool_exporter.multiprocess.reader import WorkersCollector
from pool_exporter.sidecar.database import DatabaseCollector
from tests.support import dashboard_queries as dq
from tests.support import pg_limits
from tests.support.promtool_cases import alert_rules

from .support.binaries import require_binary
from .support.exposition import scrape
from .support.procs import wait_until

ROOT = Path(__file__).resolve().parent.parent
CONFIG = MixinConfig()
DASHBOARD = d.dashboard(CONFIG)
PANELS = [p for p in walk_panels(DASHBOARD["panels"]) if p["type"] != "row"]
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{")
DATABASE_NAMES = {metric.sample for metric in m.DATABASE}
# Served by the sidecar from PgBouncer: tests/test_pgbouncer_end_to_end.py runs their panels.
PGBOUNCER_NAMES = {metric.sample for metric in m.PGBOUNCER}


# Several clusters, as a scrape config that labels every target would show them: the
# end-to-end checks below run for the default dashboard and for this one.
TARGET_LABELS = {"cluster": "eu", "env": "test"}
CLUSTERS = MixinConfig(
    selector='env="test"',
    database_selector='env="test"',
    pgbouncer_selector='env="test"',
    cluster_label="cluster",
)


def by_title(title: str, panels: list[dict[str, Any]] = PANELS) -> dict[str, Any]:
    return next(p for p in panels if p["title"] == title)


@dataclass(frozen=True)
class Shown:
    """A generated dashboard under test, and its panels."""

    data: dict[str, Any]
    panels: list[dict[str, Any]]

    @classmethod
    def of(cls, cfg: MixinConfig) -> Shown:
        data = d.dashboard(cfg)
        return cls(data, [p for p in walk_panels(data["panels"]) if p["type"] != "row"])


@pytest.fixture(params=[CONFIG, CLUSTERS], ids=["one cluster", "several clusters"])
def shown(request: pytest.FixtureRequest) -> Shown:
    return Shown.of(request.param)


def metric_names(expr: str) -> set[str]:
    if expr.startswith("label_values("):
        expr = dq.label_values(expr)[0]
    if re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr):
        return {expr}
    return set(SELECTOR.findall(expr))


def concrete(expr: str, **values: str) -> str:
    """The query with Grafana's variables replaced as Grafana would, for Prometheus."""
    chosen = {"cluster": "eu", "job": ".*", "instance": ".*", "pool": ".*", "worker": ".*"}
    chosen.update(values)
    expr = expr.replace("$__rate_interval", "1m").replace("$__interval", "15s")
    for name in sorted(chosen, key=len, reverse=True):
        expr = expr.replace(f"${name}", chosen[name])
    assert "$" not in expr, f"a variable is left in {expr!r}"
    return expr


# -- the JSON, as Grafana reads it ----------------------------------------------------------


def test_committed_json_is_what_the_generator_writes() -> None:
    committed = ROOT / "dashboards" / CONFIG.dashboard_file
    assert committed.read_text() == render(DASHBOARD), (
        "dashboards/ is stale: run `pool-exporter dashboards generate`"
    )


def test_generate_check_fails_on_a_stale_file_and_passes_after_generate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = ["dashboards", "generate", "--out-dir", str(tmp_path)]
    assert cli.main([*out, "--check"]) == 1  # missing
    assert cli.main(out) == 0
    assert cli.main([*out, "--check"]) == 0
    (tmp_path / CONFIG.dashboard_file).write_text("{}\n")
    assert cli.main([*out, "--check"]) == 1
    assert "stale" in capsys.readouterr().out


def test_unwritable_out_dir_is_one_error_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = cli.main(["dashboards", "generate", "--out-dir", str(blocker / "sub")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1


def _sorted_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert keys == sorted(keys), f"keys out of order: {keys}"
    return dict(pairs)


def test_json_is_sorted_indented_by_two_and_has_a_modern_schema_and_stable_uid() -> None:
    # Read back as a diff tool would see it: every object's keys in order, nested lines
    # indented two spaces a level, one newline at the end.
    text = (ROOT / "dashboards" / CONFIG.dashboard_file).read_text()
    json.loads(text, object_pairs_hook=_sorted_keys)
    lines = text.split("\n")
    assert lines[0] == "{" and lines[-2:] == ["}", ""]
    assert re.match(r'^  "\w', lines[1]) and all(
        (len(line) - len(line.lstrip(" "))) % 2 == 0 for line in lines
    )
    assert DASHBOARD["uid"] == "pool-exporter"
    assert DASHBOARD["id"] is None  # an import creates it
    assert DASHBOARD["schemaVersion"] >= 36  # datasource references as objects
    for legacy in ("rows", "__inputs", "sharedCrosshair", "hideControls"):
        assert legacy not in DASHBOARD


def test_panel_ids_are_unique() -> None:
    ids = [p["id"] for p in walk_panels(DASHBOARD["panels"])]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)


def test_grid_positions_do_not_overlap_and_fit_24_columns() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in walk_panels(DASHBOARD["panels"]):
        pos = panel["gridPos"]
        assert pos["w"] > 0 and pos["h"] > 0 and pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_every_panel_target_and_query_variable_uses_the_datasource_variable(
    shown: Shown,
) -> None:
    expected = {"type": "prometheus", "uid": "${datasource}"}
    for panel in shown.panels:
        assert panel["datasource"] == expected, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert all(ref_ids) and len(set(ref_ids)) == len(ref_ids), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == expected, (panel["title"], target["refId"])
    variables = {v["name"]: v for v in shown.data["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == expected, v["name"]
    for annotation in shown.data["annotations"]["list"]:
        if "expr" in annotation:
            assert annotation["datasource"] == expected, annotation["name"]


def test_template_variables_are_datasource_job_instance_pool_worker() -> None:
    variables = {v["name"]: v for v in DASHBOARD["templating"]["list"]}
    assert list(variables) == ["datasource", "job", "instance", "pool", "worker"]
    for name in ("job", "instance", "pool", "worker"):
        v = variables[name]
        _, label = dq.label_values(v["query"])
        assert v["definition"] == v["query"]
        assert v["includeAll"] and v["allValue"] == ".*"
        assert label == name  # the worker variable lists the worker slots: label `worker`


def test_every_panel_has_a_unit_and_a_one_line_description() -> None:
    for panel in PANELS:
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert unit, f"{panel['title']!r} has no unit"
        description = panel["description"]
        assert description and "\n" not in description, panel["title"]


def test_utilisation_draws_the_configured_thresholds() -> None:
    loose = replace(CONFIG, utilisation_warning=0.5)
    for cfg in (CONFIG, loose):
        panel = next(
            p
            for p in walk_panels(d.dashboard(cfg)["panels"])
            if p["title"] == "Pool utilisation per worker"
        )
        defaults = panel["fieldConfig"]["defaults"]
        steps = [s["value"] for s in defaults["thresholds"]["steps"]]
        assert steps == [None, cfg.utilisation_warning, 1.0]
        assert defaults["custom"]["thresholdsStyle"]["mode"] != "off"
        assert defaults["unit"] == "percentunit"


def test_checkout_wait_heatmap_reads_prometheus_buckets() -> None:
    panel = by_title("Checkout wait (heatmap)")
    assert panel["type"] == "heatmap"
    assert panel["options"]["calculate"] is False
    assert panel["options"]["yAxis"]["unit"] == "s"
    (target,) = panel["targets"]
    assert target["format"] == "heatmap" and target["legendFormat"] == "{{le}}"
    assert "sum by (le)" in target["expr"]
    assert m.CHECKOUT_WAIT.name + "_bucket" in target["expr"]


def test_annotations_show_firing_alerts_and_marked_events() -> None:
    found = {a["name"]: a for a in DASHBOARD["annotations"]["list"]}
    assert 'alertstate="firing"' in found["Alerts firing"]["expr"]
    assert metric_names(found["Alerts firing"]["expr"]) == {"ALERTS"}
    events = found["Marked events"]
    assert metric_names(events["expr"]) == {m.EVENT_LAST_TIMESTAMP.sample}
    assert events["useValueForTime"] is True and events["titleFormat"] == "{{event}}"


def test_every_query_selects_only_contract_names() -> None:
    contract = {metric.sample for metric in (*m.ALL, *m.DATABASE, *m.EVENT, *m.PGBOUNCER)}
    contract |= {f"{metric.name}_bucket" for metric in m.ALL if metric.kind == "histogram"}
    contract |= {"ALERTS"}
    for where, expr in dq.queries(DASHBOARD):
        names = metric_names(expr)
        assert names, f"{where}: no metric selected in {expr!r}"
        assert names <= contract, f"{where}: {names - contract} not in metrics.py"


# -- one config for the rules and the dashboard: selectors and several clusters --------------

SELECTED = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
KEPT = re.compile(r"\b(?:by|on)\s*\(([^)]*)\)")
CLUSTER_MATCHER = 'cluster=~"$cluster"'


def test_without_a_cluster_label_there_is_no_cluster_variable_or_matcher() -> None:
    assert "cluster" not in json.dumps(DASHBOARD)


def test_a_selector_and_a_cluster_label_narrow_and_group_every_query() -> None:
    data = d.dashboard(CLUSTERS)
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert list(variables) == ["datasource", "cluster", "job", "instance", "pool", "worker"]
    cluster = variables["cluster"]
    assert dq.label_values(cluster["query"]) == ('sqlalchemy_pool_info{env="test"}', "cluster")
    assert not cluster["includeAll"] and not cluster["multi"]  # one cluster at a time
    selected, kept = 0, 0
    for where, query in dq.queries(data):
        expr = dq.label_values(query)[0] if where.startswith("variable") else query
        bare = re.findall(r"\b(?:sqlalchemy_pool|pool_exporter)_\w+\b(?!\{)", expr)
        assert not bare, f"{where}: {bare} selected without the matchers"
        for name, matchers in SELECTED.findall(expr):
            found = matchers.split(",")
            if where != "variable cluster":
                assert CLUSTER_MATCHER in found, f"{where}: {name} not narrowed to the cluster"
            if name != "ALERTS":
                assert 'env="test"' in found, f"{where}: {name} without the selector"
            selected += 1
        for labels in KEPT.findall(expr):
            assert "cluster" in labels.split(", "), f"{where}: by ({labels}) drops the cluster"
            kept += 1
    assert selected > 50 and kept > 30


def test_the_cluster_settings_change_nothing_else_in_the_dashboard() -> None:
    """Without its cluster variable, cluster matchers and selector, the several-cluster
    dashboard is the default one, query for query."""

    def without_clusters(expr: str) -> str:
        for added in (CLUSTER_MATCHER + ",", ',env="test"', 'env="test"', "cluster, "):
            expr = expr.replace(added, "")
        return re.sub(r" by \(cluster\) \(", "(", expr).replace("{}", "")

    found = {w: without_clusters(q) for w, q in dq.queries(d.dashboard(CLUSTERS))}
    assert found.pop("variable cluster") == "label_values(sqlalchemy_pool_info, cluster)"
    assert found == dict(dq.queries(DASHBOARD))


# -- against a real Prometheus scraping real instrumented engines ---------------------------

WORKER_SCRIPT = textwrap.dedent(
    """
    import sys
    import sqlalchemy as sa
    import pool_exporter
    from pool_exporter.events import mark_event

    engine = sa.create_engine(sys.argv[1], pool_size=2, max_overflow=1)
    pool_exporter.instrument(engine, name="worker-pool")
    for _ in range(20):
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    mark_event("deploy")
    print("ready", flush=True)
    sys.stdin.read()  # a live worker: its gauges are served until it exits
    """
)


@dataclass
class Live:
    prom: PrometheusServer
    emitted: set[str]
    worker: str  # the worker slot of the multiprocess worker
    marked_at: float


class LabelledPrometheus(PrometheusServer):
    """A Prometheus that adds TARGET_LABELS to every target, as a scrape config does."""

    def config(self) -> dict[str, Any]:
        config = super().config()
        for job in config["scrape_configs"]:
            for static in job["static_configs"]:
                static["labels"] = TARGET_LABELS
        return config


def _serve(registry: CollectorRegistry) -> tuple[str, Any]:
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    return f"127.0.0.1:{server.server_port}", (server, thread)


def _workload(registry: CollectorRegistry, directory: Path) -> float:
    """Real traffic on real QueuePools: checkouts, a wait that times out, invalidations, a
    refused connect, a failing hook; returns when mark_event("push") was called."""
    engine = sa.create_engine(
        f"sqlite:///{directory}/app.db", pool_size=1, max_overflow=0, pool_timeout=0.2
    )
    # route=: the panels of who holds the connections read the app's checkouts by route
    pool_exporter.instrument(engine, name="app", registry=registry, route=lambda: "/orders/{id}")
    broken = sa.create_engine(f"sqlite:///{directory}/missing/dir/x.db")
    pool_exporter.instrument(broken, name="broken", registry=registry)
    hooked = sa.create_engine(f"sqlite:///{directory}/hooked.db")
    handle = pool_exporter.instrument(hooked, name="hooked", registry=registry)

    def invalidate() -> None:
        with engine.connect() as conn:
            conn.invalidate()

    def fail_a_hook() -> None:
        hold, handle.stats.hold = handle.stats.hold, None  # type: ignore[assignment]
        with hooked.connect():
            pass  # the checkin hook raises inside the exporter: counted, not raised
        handle.stats.hold = hold

    # Invalidation and hook-error series are born at their first event, and rate() cannot see
    # the step from no series to 1: a first event, a scrape, then the ones the panels show.
    invalidate()
    fail_a_hook()
    time.sleep(1.2)
    for _ in range(10):
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    with engine.connect(), pytest.raises(sa.exc.TimeoutError):
        engine.connect()  # the one connection is held: waits 0.2 s, then times out
    invalidate()
    with pytest.raises(sa.exc.OperationalError):
        broken.connect()
    fail_a_hook()
    at = time.time()
    mark_event("push", registry=registry)
    return at


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    binary = require_binary("prometheus")
    directory = tmp_path_factory.mktemp("dashboards")
    registry = CollectorRegistry()
    # A gunicorn-like worker in multiprocess mode, so gauges carry the worker slot.
    multiproc = directory / "multiproc"
    multiproc.mkdir()
    worker = subprocess.Popen(
        [sys.executable, "-c", WORKER_SCRIPT, f"sqlite:///{directory}/worker.db"],
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None and worker.stdin is not None
    assert worker.stdout.readline().strip() == "ready"
    merged = CollectorRegistry()
    merged.register(WorkersCollector(str(multiproc)))
    app_target, app_server = _serve(registry)
    worker_target, worker_server = _serve(merged)
    with LabelledPrometheus([app_target, worker_target], interval=0.5, binary=binary) as prom:
        wait_until(lambda: prom.query("count(up == 1) == 2"), timeout=30, what="two targets up")
        marked_at = _workload(registry, directory)
        time.sleep(1.5)  # three more scrapes: the workload's increases are in the TSDB
        emitted = {name for name, _ in scrape(registry)} | {name for name, _ in scrape(merged)}
        workers = {dict(labels).get(WORKER) for name, labels in scrape(merged)} - {None}
        assert len(workers) == 1, workers
        yield Live(prom, emitted, workers.pop() or "", marked_at)
    for server, thread in (app_server, worker_server):
        server.shutdown()
        thread.join()
    worker.stdin.close()
    worker.wait(10)


def test_every_query_parses_in_prometheus(live: Live, shown: Shown) -> None:
    for where, query in dq.queries(shown.data):
        expr = dq.label_values(query)[0] if where.startswith("variable") else query
        try:
            live.prom.query(concrete(expr))
        except QueryError as exc:
            pytest.fail(f"{where}: {exc}")


def test_a_bad_query_would_be_caught(live: Live) -> None:
    with pytest.raises(QueryError):
        live.prom.query(concrete("sum by (pool) (rate(sqlalchemy_pool_checkouts_total))"))


def test_every_pool_side_name_is_emitted_by_the_exporter(live: Live, shown: Shown) -> None:
    for where, expr in dq.queries(shown.data):
        names = metric_names(expr) - DATABASE_NAMES - PGBOUNCER_NAMES - {"ALERTS"}
        missing = names - live.emitted
        assert not missing, f"{where}: the exporter never emitted {missing}"


def _waits_for_data(prom: PrometheusServer, where: str, expr: str) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 15
    while True:
        result = prom.query(expr)
        if result or time.monotonic() > deadline:
            assert result, f"{where}: no data for {expr!r}"
            return result
        time.sleep(0.25)


def test_every_pool_panel_returns_data_for_all_and_for_one_worker(live: Live, shown: Shown) -> None:
    for panel in shown.panels:
        for target in panel["targets"]:
            expr = target["expr"]
            if metric_names(expr) & (DATABASE_NAMES | PGBOUNCER_NAMES):
                continue  # the SQLite app has no sidecar: see the PostgreSQL tests
            where = f"{panel['title']!r} {target['refId']}"
            _waits_for_data(live.prom, where, concrete(expr))
            if d.WORKER_MATCHER in expr:
                one = concrete(expr, worker=live.worker, pool="worker-pool")
                for series in _waits_for_data(live.prom, where + " (one worker)", one):
                    assert series["metric"].get(WORKER, live.worker) == live.worker


def test_variables_list_the_jobs_instances_pools_and_workers(live: Live, shown: Shown) -> None:
    variables = {v["name"]: v for v in shown.data["templating"]["list"] if v["type"] == "query"}
    listed = {}
    for name, v in variables.items():
        selector, label = dq.label_values(v["query"])
        result = live.prom.query(concrete(selector))
        listed[name] = {s["metric"][label] for s in result if label in s["metric"]}
    assert listed["job"] == {"pool-exporter"}
    assert len(listed["instance"]) == 2
    assert listed["pool"] == {"app", "broken", "hooked", "worker-pool"}
    assert listed["worker"] == {live.worker}
    assert listed.get("cluster", {"eu"}) == {"eu"}


def test_utilisation_is_per_worker_and_within_0_and_1(live: Live, shown: Shown) -> None:
    expr = by_title("Pool utilisation per worker", shown.panels)["targets"][0]["expr"]
    result = _waits_for_data(live.prom, "utilisation", concrete(expr))
    pools = {(s["metric"]["pool"], s["metric"].get(WORKER)) for s in result}
    assert ("worker-pool", live.worker) in pools and ("app", None) in pools
    assert all(0 <= float(s["value"][1]) <= 1 for s in result)


def test_error_panels_show_the_timeout_connect_error_invalidation_and_hook_error(
    live: Live, shown: Shown
) -> None:
    for title, label in (
        ("Checkout timeouts and failures", "app"),
        ("Connect errors", "broken"),
        ("Invalidations", "app"),
        ("Exporter hook errors", "hooked"),
    ):
        expr = by_title(title, shown.panels)["targets"][0]["expr"]
        expr = concrete(expr.replace("rate(", "increase("))
        result = _waits_for_data(live.prom, title, f"{expr} > 0")
        assert label in {s["metric"]["pool"] for s in result}, title


def test_marked_event_annotation_sits_at_the_time_it_was_marked(live: Live, shown: Shown) -> None:
    annotations = shown.data["annotations"]["list"]
    (annotation,) = [a for a in annotations if a["name"] == "Marked events"]
    result = _waits_for_data(live.prom, "events", concrete(annotation["expr"]))
    at = {s["metric"]["event"]: float(s["value"][1]) / 1000 for s in result}
    assert set(at) == {"push", "deploy"}
    assert abs(at["push"] - live.marked_at) < 0.01


@pytest.mark.postgres
def test_database_panels_return_data_from_a_real_sidecar_view(pg_url: str, shown: Shown) -> None:
    binary = require_binary("prometheus")
    registry = CollectorRegistry()
    collector = DatabaseCollector(pg_url)
    registry.register(collector)
    engine = sa.create_engine(pg_url, pool_size=3, max_overflow=2)
    pool_exporter.instrument(engine, name="pg", registry=registry)
    target, (server, thread) = _serve(registry)
    try:
        # A role and a database with limits, the database with a connection: the limits'
        # panels have something to show only where there is a limit.
        with (
            pg_limits.limited_role(pg_url),
            pg_limits.limited_database(pg_url) as limited,
            pg_limits.connect(pg_url, dbname=limited),
            engine.connect() as conn,
            LabelledPrometheus([target], interval=0.5, binary=binary) as prom,
        ):
            conn.exec_driver_sql("select 1")
            emitted = {name for name, _ in scrape(registry)}
            for panel in shown.panels:
                for t in panel["targets"]:
                    names = metric_names(t["expr"])
                    if not names & DATABASE_NAMES or names & PGBOUNCER_NAMES:
                        continue
                    assert names <= emitted, f"{panel['title']!r}: {names - emitted}"
                    _waits_for_data(prom, panel["title"], concrete(t["expr"]))
            share = by_title("Fleet's share of the database", shown.panels)["targets"][0]["expr"]
            (value,) = _waits_for_data(prom, "share", concrete(share))
            assert 0 < float(value["value"][1]) < 1  # 5 possible connections of many
    finally:
        server.shutdown()
        thread.join()
        collector.close()
        engine.dispose()


def _thresholds(rules_dir: Path) -> dict[str, float]:
    """The numbers SQLAlchemyPoolNearlyFull and SQLAlchemyFleetExceedsDatabaseLimit compare
    their records with, read from the rule file's expressions."""
    groups = yaml.safe_load((rules_dir / RULES_FILE).read_text())["groups"]
    rules = {rule["alert"]: rule for rule in alert_rules(groups)}
    names = record_names(MixinConfig())
    found = {}
    for alert, record in (
        ("SQLAlchemyPoolNearlyFull", names.utilisation),
        ("SQLAlchemyFleetExceedsDatabaseLimit", names.fleet_database_ratio),
    ):
        numbers = re.findall(rf"{re.escape(record)} >=? ([0-9.]+)", rules[alert]["expr"])
        assert len(numbers) == 1, rules[alert]["expr"]
        found[alert] = float(numbers[0])
    return found


def _bands(dashboards_dir: Path, title: str) -> list[tuple[str, float]]:
    written = json.loads((dashboards_dir / CONFIG.dashboard_file).read_text())
    panel = next(p for p in walk_panels(written["panels"]) if p["title"] == title)
    steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[0] == {"color": "green", "value": None}
    return [(step["color"], step["value"]) for step in steps[1:]]


def _assert_bands_where_the_alerts_fire(rules_dir: Path, dashboards_dir: Path) -> None:
    fire = _thresholds(rules_dir)
    assert _bands(dashboards_dir, "Pool utilisation per worker") == [
        ("orange", fire["SQLAlchemyPoolNearlyFull"]),
        ("red", 1.0),
    ]
    assert _bands(dashboards_dir, "Fleet's share of the database") == [
        ("orange", fire["SQLAlchemyFleetExceedsDatabaseLimit"])
    ]


def test_the_dashboard_draws_its_bands_where_the_committed_alert_rules_fire() -> None:
    _assert_bands_where_the_alerts_fire(ROOT / "alerts", ROOT / "dashboards")


def test_one_config_file_moves_the_alert_thresholds_and_the_dashboard_bands_together(
    tmp_path: Path,
) -> None:
    config = tmp_path / "mine.yml"
    config.write_text("utilisation_warning: 0.7\nfleet_share: 0.9\n")
    for command in ("alerts", "dashboards"):
        out = ["--out-dir", str(tmp_path / command)]
        assert cli.main([command, "generate", "--config", str(config), *out]) == 0
    assert _thresholds(tmp_path / "alerts") == {
        "SQLAlchemyPoolNearlyFull": 0.7,
        "SQLAlchemyFleetExceedsDatabaseLimit": 0.9,
    }
    _assert_bands_where_the_alerts_fire(tmp_path / "alerts", tmp_path / "dashboards")


def _cli_without(module: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`pool-exporter ARGS` in a process where `module` cannot be imported."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from pool_exporter.cli import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd, env=env, check=False
    )


def test_a_cluster_label_from_a_json_config_needs_no_yaml_and_a_yaml_one_names_the_extra(
    tmp_path: Path,
) -> None:
    (tmp_path / "mine.json").write_text('{"cluster_label": "cluster"}')
    (tmp_path / "mine.yml").write_text("cluster_label: cluster\n")
    out = ["--out-dir", str(tmp_path / "out")]
    args = ["dashboards", "generate", "--config"]
    ok = _cli_without("yaml", *args, str(tmp_path / "mine.json"), *out, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    written = json.loads((tmp_path / "out" / CONFIG.dashboard_file).read_text())
    assert "cluster" in [v["name"] for v in written["templating"]["list"]]
    refused = _cli_without("yaml", *args, str(tmp_path / "mine.yml"), *out, cwd=tmp_path)
    assert refused.returncode == 2
    assert refused.stderr == (
        "error: pool-exporter dashboards needs yaml, which is not installed: "
        "pip install 'pool-exporter[dashboards]'\n"
    )


def test_dashboards_generate_refuses_a_bad_config_with_one_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "bad.yml"
    config.write_text("fleet_share: lots\n")
    out = ["--out-dir", str(tmp_path)]
    assert cli.main(["dashboards", "generate", "--config", str(config), *out]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {config}: fleet_share: expected a number, got 'lots'\n"
    assert not (tmp_path / CONFIG.dashboard_file).exists()
