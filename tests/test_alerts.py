"""The alert rules: generated files up to date, accepted by promtool and amtool, every alert
tested with promtool (not yet, firing with exact labels and annotations, resolved, quiet at
a steady 70 %), the incident's burst paged before the first timeout, and every metric a rule
reads present in the exporter's real output."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client import CollectorRegistry

from pool_exporter import alerts
from pool_exporter.alertconfig import AlertConfig
from pool_exporter.alertrules import alert_rules
from pool_exporter.cli import main
from pool_exporter.database import DatabaseCollector
from pool_exporter.instrument import instrument

from . import promtool_cases as pc
from .conftest import require_binary, scrape

ROOT = Path(__file__).resolve().parent.parent
ALERTS_DIR = ROOT / "alerts"
RULES = ALERTS_DIR / alerts.RULES_FILE
RUNBOOKS = ROOT / "docs" / "runbooks.md"


def committed_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for rule in alert_rules(groups)}


RULE = committed_rules()

# -- the committed files --------------------------------------------------------------------


def test_committed_files_are_exactly_what_the_generator_writes() -> None:
    for path, text in alerts.generate(AlertConfig(), ALERTS_DIR).items():
        assert path.is_file(), f"{path} is missing: run `pool-exporter alerts generate`"
        assert path.read_text() == text, f"{path} is stale: run `pool-exporter alerts generate`"


def test_generate_check_exits_1_for_a_stale_file_and_0_once_regenerated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in (alerts.RULES_FILE, alerts.PROMETHEUSRULE_FILE, alerts.ALERTMANAGER_FILE):
        shutil.copy(ALERTS_DIR / name, tmp_path / name)
    check = ["alerts", "generate", "--out-dir", str(tmp_path), "--check"]
    assert main(check) == 0
    rules = tmp_path / alerts.RULES_FILE
    rules.write_text(rules.read_text().replace(">= 0.8", ">= 0.85", 1))
    assert main(check) == 1
    assert f"stale: {rules}" in capsys.readouterr().out
    assert main(["alerts", "generate", "--out-dir", str(tmp_path)]) == 0
    assert main(check) == 0


def test_a_users_config_file_changes_thresholds_durations_and_runbook_url(tmp_path: Path) -> None:
    config = tmp_path / "mine.yml"
    config.write_text(
        'selector: job="shop"\nutilisation_warning: 0.7\nnearly_full_for: 5m\n'
        "runbook_url: https://wiki.example/pools\nfleet_labels: [job, cluster]\n"
    )
    assert main(["alerts", "generate", "--config", str(config), "--out-dir", str(tmp_path)]) == 0
    groups = yaml.safe_load((tmp_path / alerts.RULES_FILE).read_text())["groups"]
    rules = {r["alert"]: r for r in alert_rules(groups)}
    nearly = rules["SQLAlchemyPoolNearlyFull"]
    assert nearly["expr"] == "pool:sqlalchemy_pool_utilisation:ratio >= 0.7"
    assert nearly["for"] == "5m"
    assert nearly["annotations"]["runbook_url"] == (
        "https://wiki.example/pools#sqlalchemypoolnearlyfull"
    )
    records = {r["record"]: r["expr"] for g in groups for r in g["rules"] if "record" in r}
    assert 'sqlalchemy_pool_connections{state="in_use",job="shop"}' in records[alerts.UTILISATION]
    assert records["job_cluster:sqlalchemy_pool_max_connections:sum"] == (
        'sum by (job, cluster) (sqlalchemy_pool_max_connections{job="shop"})'
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("utilisation_warning: [0.8\n", "not valid YAML"),
        ("- 1\n- 2\n", "expected a mapping of settings, got list"),
        ("utilisation_warnin: 0.7\n", "unknown setting utilisation_warnin"),
        ("utilisation_warning: high\n", "utilisation_warning: expected a number, got 'high'"),
        ("page_for: 30 seconds\n", "page_for: '30 seconds' is not a Prometheus duration"),
        ("selector: job=shop\n", "selector: 'job=shop' is not a list of matchers"),
        ("queue_page_share: 0\n", "queue_page_share: must be above 0"),
    ],
)
def test_a_malformed_config_is_one_error_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    config = tmp_path / "bad.yml"
    config.write_text(text)
    code = main(["alerts", "generate", "--config", str(config), "--out-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err
    assert not (tmp_path / alerts.RULES_FILE).exists()


def test_a_missing_config_file_is_one_error_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["alerts", "generate", "--config", str(tmp_path / "nope.yml")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: cannot read ") and err.count("\n") == 1


def test_promtool_accepts_the_rule_file_and_the_prometheusrule_spec(
    promtool: str, tmp_path: Path
) -> None:
    resource = yaml.safe_load((ALERTS_DIR / alerts.PROMETHEUSRULE_FILE).read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    spec = tmp_path / "spec.yml"
    spec.write_text(yaml.safe_dump(resource["spec"]))
    assert resource["spec"] == yaml.safe_load(RULES.read_text())
    for path in (RULES, spec):
        result = subprocess.run(
            [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "SUCCESS: 23 rules found" in result.stdout


def amtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_binary("amtool"), *args], capture_output=True, text=True, check=False
    )


def test_amtool_accepts_the_alertmanager_example() -> None:
    result = amtool("check-config", str(ALERTS_DIR / alerts.ALERTMANAGER_FILE))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("severity", "receiver"), [("critical", "pager"), ("warning", "chat"), ("info", "tickets")]
)
def test_alertmanager_example_routes_pages_to_the_pager_and_warnings_to_chat(
    severity: str, receiver: str
) -> None:
    config = f"--config.file={ALERTS_DIR / alerts.ALERTMANAGER_FILE}"
    result = amtool("config", "routes", "test", config, f"severity={severity}", "pool=main")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_alertmanager_example_groups_by_pool_and_a_page_inhibits_the_pools_warnings() -> None:
    config = yaml.safe_load((ALERTS_DIR / alerts.ALERTMANAGER_FILE).read_text())
    assert "pool" in config["route"]["group_by"]
    [inhibit] = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert re.fullmatch(inhibit["target_matchers"][0].split("=~")[1].strip('"'), "warning")
    assert {"job", "pool"} <= set(inhibit["equal"])


def test_every_alert_has_severity_summary_description_and_a_runbook_anchor() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    for name, rule in RULE.items():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        # the live value, or (for a state that has no number) who is affected
        assert "$value" in notes["description"] or "$labels.instance" in notes["description"]
        assert notes["runbook_url"].split("#")[1] in anchors, f"{name}: no runbook section"


# -- every metric a rule reads exists in the exporter's real output --------------------------

_KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "bool", "offset"}


def selected_metrics(expr: str) -> set[str]:
    """Metric and recording rule names an expression selects: identifiers that are not a
    function, keyword, label name (in braces or a by/on list), string or duration."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = re.findall(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?!\w)(?!\s*\()", text)
    return {n for n in names if n not in _KEYWORDS}


def test_metric_name_extraction_finds_names_and_skips_functions_labels_and_keywords() -> None:
    expr = (
        'sum without (pid, soft) (increase(sqlalchemy_pool_x_total{state="in_use"}[5m])) '
        "/ ignoring (state) group_left () job:y:ratio > 0 and on (job) up"
    )
    assert selected_metrics(expr) == {"sqlalchemy_pool_x_total", "job:y:ratio", "up"}


def exporter_sample_names(sqlite_url: str, pg_url: str) -> set[str]:
    registry = CollectorRegistry()
    engine = sa.create_engine(sqlite_url, poolclass=sa.pool.QueuePool)
    handle = instrument(engine, name="app", registry=registry)
    database = DatabaseCollector(pg_url)
    registry.register(database)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
        return {name for name, _ in scrape(registry)}
    finally:
        handle.uninstrument()
        engine.dispose()
        database.close()


def test_every_metric_a_rule_reads_is_in_the_exporters_real_output(
    sqlite_url: str, pg_url: str
) -> None:
    exported = exporter_sample_names(sqlite_url, pg_url)
    groups = yaml.safe_load(RULES.read_text())["groups"]
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    missing = {}
    for group in groups:
        for rule in group["rules"]:
            for name in selected_metrics(rule["expr"]) - records - {"up"}:
                if name not in exported:
                    missing[name] = rule.get("alert") or rule.get("record")
    assert not missing, f"rules read series the exporter does not emit: {missing}"
    # the check itself sees a rename
    assert "sqlalchemy_pool_waiting_checkouts" in exported
    assert "sqlalchemy_pool_waiting_checkout" not in exported


# -- promtool test cases, one per alert -------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One alert's life in series: not yet firing at `before` (its `for` not yet run out, or
    the trouble not yet there), firing at `firing` with the labels and description given,
    resolved at `resolved`."""

    alert: str
    series: Callable[[], pc.Series]
    before: float
    firing: float
    labels: dict[str, str]
    description: str
    resolved: float


def pool_case(pool: pc.Pool, seconds: int, interval: int = 15) -> Callable[[], pc.Series]:
    def build() -> pc.Series:
        s = pc.Series(interval, seconds // interval + 1)
        pool.add(s)
        pc.database(s, lambda k: 50.0)
        return s

    return build


def between(
    start: float, end: float, inside: pc.Value, outside: pc.Value, interval: int = 15
) -> pc.Fn:
    """A value `inside` [start, end) seconds, `outside` elsewhere."""
    return lambda k: inside if start <= k * interval < end else outside


STEADY = 10.5  # 70 % of 15
WORKER = pc.labels(pid="101")
WHERE = "pool main on web-1:8000 (worker 101)"

CASES = [
    Case(
        "SQLAlchemyPoolNearlyFull",
        pool_case(pc.Pool(in_use=between(300, 600, 13.5, STEADY)), 900),
        before=405,
        firing=420,
        labels=WORKER,
        description=f"{WHERE} has had 90% of its connections in use for 2m: the next burst "
        "will make callers wait.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolExhausted",
        pool_case(
            pc.Pool(in_use=between(300, 600, 15, STEADY), waiting=between(300, 600, 200, 0)),
            900,
        ),
        before=285,
        firing=300,
        labels=WORKER,
        description=f"{WHERE} is full and the callers queued for a connection need about 2s "
        "to be served at the recent hold time.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolCallersWaiting",
        pool_case(
            pc.Pool(in_use=between(300, 600, 15, STEADY), waiting=between(300, 600, 3, 0)), 900
        ),
        before=345,
        firing=360,
        labels=WORKER,
        description=f"{WHERE} has been at capacity with callers waiting for 1m; 3 are waiting now.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolQueueNearTimeout",
        pool_case(
            pc.Pool(in_use=between(300, 600, 15, STEADY), waiting=between(300, 600, 2400, 0)),
            900,
        ),
        before=300,
        firing=315,
        labels=WORKER,
        description=f"{WHERE} is full and its queue needs 80% of the pool timeout to drain: "
        "checkouts will fail with TimeoutError unless load drops.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolCheckoutWaitNearTimeout",
        # from 300 s every checkout served waited 17.5 s, and callers keep waiting
        pool_case(
            pc.Pool(
                in_use=between(300, 600, 15, STEADY),
                waiting=between(300, 600, 500, 0),
                wait=between(300, 600, 17.5, 0.001),
            ),
            900,
        ),
        before=300,
        firing=315,
        labels=pc.labels(),
        # p99 of 2 fast and 2 slow intervals: 15 + 5 * (0.99 * 4 - 2) / 2 = 19.9 s of 30
        description="pool main on web-1:8000: the 99th percentile checkout over 1m waited "
        "66.33% of the pool timeout and callers are still waiting.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolCheckoutTimeouts",
        pool_case(pc.Pool(in_use=lambda k: 15, timeouts=lambda k: 60 if k * 15 == 300 else 0), 600),
        before=285,
        firing=300,
        labels=pc.labels(),
        description="pool main on web-1:8000: 1 checkouts/s timed out over the last 1m; the "
        "application is returning errors.",
        resolved=360,
    ),
    Case(
        "SQLAlchemyPoolHeadroomLow",
        # two minutes at capacity; the busiest 1m average reaches 94 % at the fourth sample
        pool_case(pc.Pool(in_use=between(300, 420, 15, STEADY, 60)), 7 * 3600, interval=60),
        before=300,
        firing=360,
        labels=pc.labels(),
        description="pool main on web-1:8000: its busiest 1m in the last 6h averaged 100% of "
        "capacity. Raise the pool (or the workers) before the next push.",
        resolved=420 + 6 * 3600 + 60,
    ),
]


def connect_errors() -> pc.Series:
    """10 connections opened per interval; from 300 s to 600 s none, and 30 attempts fail."""
    s = pc.Series(15, 1201 // 15 + 1)
    failing = between(300, 615, 30.0, 0.0)
    pc.Pool(
        in_use=lambda k: STEADY,
        connects=lambda k: 0.0 if failing(k) else 10.0,
        connect_errors=failing,
    ).add(s)
    return s


def invalidations() -> pc.Series:
    """Two workers of 15: 18 invalidations at 600 s are 60 % of the instance's 30."""
    s = pc.Series(15, 81)
    storm = pc.Pool(
        in_use=lambda k: STEADY,
        pids=("101", "102"),
        invalidations=lambda k: 18.0 if k * 15 == 600 else 0.0,
    )
    storm.add(s)
    return s


def fleet() -> pc.Series:
    """Four workers of 15 (60 of the database's 100), eight from 300 s to 1500 s (120)."""
    s = pc.Series(15, 1801 // 15 + 1)
    pc.Pool(in_use=lambda k: STEADY, pids=("101", "102", "103", "104")).add(s)
    for pid in ("201", "202", "203", "204"):
        on = between(300, 1500, 15.0, None)
        s.gauge("sqlalchemy_pool_max_connections", pc.labels(pid=pid), on)
    pc.database(s, lambda k: 50.0)
    return s


def database_busy() -> pc.Series:
    """97 of the 100 slots in use from 300 s to 900 s."""
    s = pc.Series(15, 1201 // 15 + 1)
    pc.Pool(in_use=lambda k: STEADY).add(s)
    pc.database(s, between(300, 900, 97.0, 50.0))
    return s


def database_down() -> pc.Series:
    s = pc.Series(15, 601 // 15 + 1)
    pc.Pool(in_use=lambda k: STEADY).add(s)
    pc.database(s, lambda k: 50.0, up=between(300, 450, 0.0, 1.0))
    return s


def metrics_absent() -> pc.Series:
    """web-1 keeps answering scrapes without pool metrics from 300 s to 1500 s; web-2 is
    removed from service discovery at 300 s and must stay quiet."""
    s = pc.Series(15, 1801 // 15 + 1)
    gone = between(300, 1500, None, 1.0)
    info = {**pc.labels(pool_class="QueuePool", dialect="sqlite", driver="pysqlite")}
    s.gauge(pc.info(), info, gone)
    s.gauge("up", {"job": pc.JOB, "instance": pc.INSTANCE}, pc.one)
    s.gauge(pc.info(), {**info, "instance": "web-2:8000"}, between(0, 300, 1.0, None))
    s.gauge("up", {"job": pc.JOB, "instance": "web-2:8000"}, between(0, 300, 1.0, None))
    return s


DB = {"job": pc.JOB}
CASES += [
    Case(
        "SQLAlchemyPoolConnectErrors",
        connect_errors,
        before=345,  # pending since 300 s
        firing=360,
        labels=pc.labels(),
        description="pool main on web-1:8000: 50% of the attempts to open a connection failed "
        "over the last 5m.",
        resolved=900,
    ),
    Case(
        "SQLAlchemyPoolInvalidationStorm",
        invalidations,
        before=585,
        firing=600,
        labels=pc.labels(),
        description="pool main on web-1:8000: connections amounting to 60% of the pool's "
        "capacity were invalidated over the last 5m (database restart, failover or network "
        "trouble).",
        resolved=915,
    ),
    Case(
        "SQLAlchemyFleetExceedsDatabaseLimit",
        fleet,
        before=1185,
        firing=1200,
        labels=DB,
        description="The pools of app may open 120% of the connections the database allows "
        "ordinary roles (max_connections minus reserved): under load, new connections will "
        "be refused.",
        resolved=1500,
    ),
    Case(
        "PoolExporterDatabaseConnectionsNearLimit",
        database_busy,
        before=585,
        firing=600,
        labels=DB,
        description="The database of app has 97% of the connection slots for ordinary roles "
        "in use.",
        resolved=900,
    ),
    Case(
        "PoolExporterDatabaseConnectionsExhausted",
        database_busy,
        before=345,
        firing=360,
        labels=DB,
        description="The database of app has 97% of the connection slots for ordinary roles "
        "in use: new connections are being refused.",
        resolved=900,
    ),
    Case(
        "PoolExporterDatabaseDown",
        database_down,
        before=405,
        firing=420,
        labels={"job": pc.JOB, "instance": pc.SIDECAR},
        description="The sidecar web-1:9187 of app has not been able to query the database for 2m.",
        resolved=450,
    ),
    Case(
        "SQLAlchemyPoolMetricsAbsent",
        metrics_absent,
        before=885,
        firing=900,
        labels={"job": pc.JOB, "instance": pc.INSTANCE},
        description="web-1:8000 of app reported connection pool metrics in the last 1h and "
        "has reported none for 10m: the pools are not watched.",
        resolved=1500,
    ),
]


def test_every_alert_has_a_promtool_case() -> None:
    assert sorted(c.alert for c in CASES) == sorted(RULE)


def run_checks(
    promtool: str, tmp: Path, series: pc.Series, checks: list[tuple[float, str, list[Any]]]
) -> None:
    result = pc.promtool_test(promtool, RULES, tmp, series, checks)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("case", CASES, ids=[c.alert for c in CASES])
def test_alert_is_not_yet_firing_then_fires_with_exact_labels_and_annotations_then_resolves(
    case: Case, promtool: str, tmp_path: Path
) -> None:
    rule = RULE[case.alert]
    firing = pc.expected(rule, case.labels, case.description)
    checks = [
        (case.before, case.alert, []),
        (case.firing, case.alert, [firing]),
        (case.resolved, case.alert, []),
    ]
    run_checks(promtool, tmp_path, case.series(), checks)


def test_the_promtool_cases_can_fail(promtool: str, tmp_path: Path) -> None:
    """A wrong expectation (a firing alert expected quiet) makes promtool fail."""
    case = CASES[0]
    result = pc.promtool_test(
        promtool, RULES, tmp_path, case.series(), [(case.firing, case.alert, [])]
    )
    assert result.returncode == 1 and "FAILED" in result.stdout + result.stderr


def test_nothing_fires_at_a_steady_70_percent_utilisation(promtool: str, tmp_path: Path) -> None:
    """Two workers at 70 %, checkouts fast, the database half used, for 7 hours (the headroom
    window is 6); every alert is checked at several times."""
    s = pc.Series(60, 7 * 60 + 1)
    pc.Pool(in_use=lambda k: STEADY, pids=("101", "102")).add(s)
    pc.database(s, lambda k: 50.0)
    times = [60 * k for k in (2, 3, 5, 10, 30, 90, 240, 420)]
    run_checks(promtool, tmp_path, s, [(t, a, []) for t in times for a in RULE])


# -- the incident: a push saturates the pool within one scrape --------------------------------

TROUBLE = 300  # the first scrape that shows the pool full


def burst(interval: int) -> pc.Series:
    """An almost idle pool (1 in use, 7 checkouts/s); at TROUBLE every connection is out and
    2,000 callers queue (20 s of work for 15 connections holding each 0.15 s); the pool
    serves 100 checkouts/s, each having waited as long as the push has run; the first
    checkouts time out 30 s (the pool timeout) after TROUBLE."""
    k0 = TROUBLE // interval
    pushed = lambda k: k >= k0  # noqa: E731
    s = pc.Series(interval, (TROUBLE + 120) // interval + 1)
    pc.Pool(
        in_use=lambda k: 15.0 if pushed(k) else 1.0,
        waiting=lambda k: 2000.0 if pushed(k) else 0.0,
        served=lambda k: 100.0 if pushed(k) else 7.0,
        wait=lambda k: min(30.0, (k - k0 + 0.5) * interval) if pushed(k) else 0.001,
        timeouts=lambda k: 50.0 if k * interval >= TROUBLE + 30 else 0.0,
    ).add(s)
    pc.database(s, lambda k: 50.0)
    return s


@pytest.mark.parametrize("interval", [15, 5])
def test_the_incident_burst_warns_and_pages_before_the_first_timeout_is_counted(
    interval: int, promtool: str, tmp_path: Path
) -> None:
    """Warning at the first evaluation that sees the pool full, page at the next, both
    before the evaluation where the timeout counter first moves (TROUBLE + 30 s): the lead
    times docs/alerts.md quotes."""
    warning = pc.expected(
        RULE["SQLAlchemyPoolExhausted"],
        WORKER,
        f"{WHERE} is full and the callers queued for a connection need about 20s to be "
        "served at the recent hold time.",
    )
    page = pc.expected(
        RULE["SQLAlchemyPoolQueueNearTimeout"],
        WORKER,
        f"{WHERE} is full and its queue needs 66.67% of the pool timeout to drain: checkouts "
        "will fail with TimeoutError unless load drops.",
    )
    timeouts = pc.expected(
        RULE["SQLAlchemyPoolCheckoutTimeouts"],
        pc.labels(),
        "pool main on web-1:8000: 833.3m checkouts/s timed out over the last 1m; the "
        "application is returning errors.",
    )
    counted = TROUBLE + 30
    checks: list[tuple[float, str, list[Any]]] = [
        (TROUBLE - interval, "SQLAlchemyPoolExhausted", []),
        (TROUBLE, "SQLAlchemyPoolExhausted", [warning]),
        (TROUBLE, "SQLAlchemyPoolQueueNearTimeout", []),  # pending: one evaluation only
        (TROUBLE + interval, "SQLAlchemyPoolQueueNearTimeout", [page]),
        (counted - interval, "SQLAlchemyPoolCheckoutTimeouts", []),
        (counted - interval, "SQLAlchemyPoolExhausted", [warning]),
        (counted - interval, "SQLAlchemyPoolQueueNearTimeout", [page]),
        (counted, "SQLAlchemyPoolCheckoutTimeouts", [timeouts]),
    ]
    run_checks(promtool, tmp_path, burst(interval), checks)


def test_a_queue_seen_at_one_scrape_only_warns_but_pages_nobody(
    promtool: str, tmp_path: Path
) -> None:
    """A deploy: one scrape catches the pool full with a deep queue, the next finds it
    drained. The page needs two consecutive evaluations; the chat warning may go out."""
    s = pc.Series(15, 41)
    pc.Pool(in_use=between(300, 315, 15.0, 1.0), waiting=between(300, 315, 2400.0, 0.0)).add(s)
    checks: list[tuple[float, str, list[Any]]] = [
        (t, a, [])
        for t in (300, 315, 330)
        for a in RULE
        if RULE[a]["labels"]["severity"] == "critical"
    ]
    run_checks(promtool, tmp_path, s, checks)


def test_a_lone_waiter_at_full_capacity_alerts_nobody(promtool: str, tmp_path: Path) -> None:
    """One caller waits at one scrape (the pool momentarily full at a steady 70 %): no
    warning, no page."""
    s = pc.Series(15, 41)
    pc.Pool(in_use=between(300, 315, 15.0, STEADY), waiting=between(300, 315, 1.0, 0.0)).add(s)
    run_checks(promtool, tmp_path, s, [(t, a, []) for t in (300, 315, 330) for a in RULE])
