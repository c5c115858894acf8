"""The alert rules: generated files (promtool tests included) up to date, accepted by promtool
and amtool, the committed promtool tests passing and covering every alert, and every metric a
rule reads present in the exporter's real output."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client import CollectorRegistry

from pool_exporter.cli import main
from pool_exporter.instrument import instrument
from pool_exporter.mixin import alerts
from pool_exporter.mixin.config import AlertConfig, load
from pool_exporter.mixin.rules import alert_rules
from pool_exporter.sidecar.database import DatabaseCollector
from tests.support import promtool_cases

from .conftest import require_binary, scrape

ROOT = Path(__file__).resolve().parent.parent
ALERTS_DIR = ROOT / "alerts"
RULES = ALERTS_DIR / alerts.RULES_FILE
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_PAGE = "https://github.com/pool-exporter/pool-exporter/blob/main/docs/runbooks.md"


def committed_rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule for rule in alert_rules(groups)}


RULE = committed_rules()

# -- the committed files --------------------------------------------------------------------


def test_committed_files_are_exactly_what_the_generators_write() -> None:
    files = {
        **alerts.generate(AlertConfig(), ALERTS_DIR),
        **promtool_cases.generate(AlertConfig(), ALERTS_DIR),
    }
    for path, text in files.items():
        assert path.is_file(), f"{path} is missing: run `make generate`"
        assert path.read_text() == text, f"{path} is stale: run `make generate`"
    committed = {p for p in ALERTS_DIR.rglob("*") if p.is_file()}
    assert committed == set(files), "alerts/ holds files the generators no longer write"


def test_generate_check_exits_1_for_a_stale_file_and_0_once_regenerated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(ALERTS_DIR, tmp_path, dirs_exist_ok=True)
    check = ["alerts", "generate", "--out-dir", str(tmp_path), "--check"]
    assert main(check) == 0
    assert promtool_cases.main(["--out-dir", str(tmp_path), "--check"]) == 0
    rules = tmp_path / alerts.RULES_FILE
    rules.write_text(rules.read_text().replace(">= 0.8", ">= 0.85", 1))
    tests = tmp_path / promtool_cases.TESTS_DIR / "evaluation-5s.test.yml"
    tests.write_text(tests.read_text().replace("eval_time: 300s", "eval_time: 301s", 1))
    assert main(check) == 1
    assert f"stale: {rules}" in capsys.readouterr().out
    assert promtool_cases.main(["--out-dir", str(tmp_path), "--check"]) == 1
    assert f"stale: {tests}" in capsys.readouterr().out
    assert main(["alerts", "generate", "--out-dir", str(tmp_path)]) == 0
    assert promtool_cases.main(["--out-dir", str(tmp_path)]) == 0
    assert main(check) == 0
    assert promtool_cases.main(["--out-dir", str(tmp_path), "--check"]) == 0


def test_a_users_config_file_changes_thresholds_durations_and_runbook_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "mine.yml"
    config.write_text(
        'selector: job="shop"\nutilisation_warning: 0.7\nnearly_full_for: 5m\n'
        "runbook_url: https://wiki.example/pools\nfleet_labels: [job, cluster]\n"
    )
    assert main(["alerts", "generate", "--config", str(config), "--out-dir", str(tmp_path)]) == 0
    # the promtool cases are written for the default thresholds: none for these rules
    assert promtool_cases.generate(load(config), tmp_path) == {}
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


def test_a_config_changing_only_runbook_url_and_severities_keeps_passing_promtool_tests(
    tmp_path: Path, promtool: str
) -> None:
    config = tmp_path / "mine.yml"
    config.write_text(
        "runbook_url: https://wiki.example/pools\nseverity_page: page\nseverity_ticket: ticket\n"
    )
    out = tmp_path / "alerts"
    assert main(["alerts", "generate", "--config", str(config), "--out-dir", str(out)]) == 0
    for path, text in promtool_cases.generate(load(config), out).items():
        path.parent.mkdir(exist_ok=True)
        path.write_text(text)
    tests = sorted((out / promtool_cases.TESTS_DIR).glob("*.test.yml"))
    assert [p.name for p in tests] == [p.name for p in TEST_FILES]
    assert "severity: page" in tests[0].read_text()
    result = promtool_test(promtool, *tests, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


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
        assert "SUCCESS: 24 rules found" in result.stdout


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


# What each alert's description must name: where it fires (a pool in a worker, a pool on an
# instance, a fleet, a scrape target) and, where the state has a number, the live value.
WORKER = {"$labels.pool", "$labels.instance", "$labels.pid", "$value"}
POOL = {"$labels.pool", "$labels.instance", "$value"}
FLEET = {"$labels.job", "$value"}
TARGET = {"$labels.instance", "$labels.job"}
SAYS = {
    "SQLAlchemyPoolNearlyFull": ("warning", WORKER),
    "SQLAlchemyPoolExhausted": ("warning", WORKER),
    "SQLAlchemyPoolCallersWaiting": ("warning", WORKER),
    "SQLAlchemyPoolQueueExceedsTimeout": ("critical", WORKER),
    "SQLAlchemyPoolQueueNearTimeout": ("critical", WORKER),
    "SQLAlchemyPoolCheckoutWaitNearTimeout": ("critical", POOL),
    "SQLAlchemyPoolCheckoutTimeouts": ("critical", POOL),
    "SQLAlchemyPoolHeadroomLow": ("info", POOL),
    "SQLAlchemyPoolConnectErrors": ("warning", POOL),
    "SQLAlchemyPoolInvalidationStorm": ("warning", POOL),
    "SQLAlchemyFleetExceedsDatabaseLimit": ("warning", FLEET),
    "PoolExporterDatabaseConnectionsNearLimit": ("warning", FLEET),
    "PoolExporterDatabaseConnectionsExhausted": ("critical", FLEET),
    "PoolExporterDatabaseDown": ("warning", TARGET),
    "SQLAlchemyPoolMetricsAbsent": ("warning", TARGET),
}


def test_every_alert_has_its_severity_a_description_naming_where_and_a_runbook_anchor() -> None:
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in RUNBOOKS.read_text().splitlines()
        if line.startswith("## ")
    }
    assert set(RULE) == set(SAYS)
    for name, rule in RULE.items():
        severity, names = SAYS[name]
        assert rule["labels"] == {"severity": severity}, name
        notes = rule["annotations"]
        assert set(notes) == {"summary", "description", "runbook_url"}, name
        assert set(re.findall(r"\$[\w.]+", notes["description"])) == names, name
        assert notes["runbook_url"] == f"{RUNBOOK_PAGE}#{name.lower()}", name
        assert name.lower() in anchors, f"{name}: no runbook section"


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


# -- the promtool unit tests, committed beside the rules ------------------------------------

TEST_FILES = sorted((ALERTS_DIR / promtool_cases.TESTS_DIR).glob("*.test.yml"))


def promtool_test(promtool: str, *files: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool, "test", "rules", *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        cwd=cwd,
    )


def test_the_committed_promtool_tests_pass_from_any_directory(
    promtool: str, tmp_path: Path
) -> None:
    assert [p.name for p in TEST_FILES] == [
        "evaluation-15s.test.yml",
        "evaluation-5s.test.yml",
        "evaluation-60s.test.yml",
    ]
    result = promtool_test(promtool, *TEST_FILES, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES)


def test_every_alert_has_a_promtool_case_firing_and_quiet() -> None:
    checks = [
        check
        for path in TEST_FILES
        for test in yaml.safe_load(path.read_text())["tests"]
        for check in test["alert_rule_test"]
    ]
    firing = {c["alertname"] for c in checks if c["exp_alerts"]}
    quiet = {c["alertname"] for c in checks if not c["exp_alerts"]}
    assert firing == quiet == set(RULE)


def test_the_incident_is_tested_at_both_intervals_with_a_short_and_a_long_queue() -> None:
    names = {
        path.name: [t["name"] for t in yaml.safe_load(path.read_text())["tests"]]
        for path in TEST_FILES
    }
    for path, interval in (("evaluation-15s.test.yml", 15), ("evaluation-5s.test.yml", 5)):
        incidents = [n for n in names[path] if n.startswith(f"the incident at {interval}s")]
        assert len(incidents) == 2, names[path]
        assert "page at the second evaluation" in incidents[0]
        assert "page at the first evaluation" in incidents[1]


def test_the_promtool_cases_can_fail(promtool: str, tmp_path: Path) -> None:
    """A wrong expectation (a firing alert expected quiet) makes promtool fail."""
    doc = yaml.safe_load(TEST_FILES[0].read_text())
    test = doc["tests"][0]
    firing = [c for c in test["alert_rule_test"] if c["exp_alerts"]]
    test["alert_rule_test"] = [{**firing[0], "exp_alerts": []}]
    doc["tests"] = [test]
    doc["rule_files"] = [str(RULES)]
    wrong = tmp_path / "wrong.test.yml"
    wrong.write_text(yaml.safe_dump(doc))
    result = promtool_test(promtool, wrong, cwd=tmp_path)
    assert result.returncode == 1 and "FAILED" in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("alert", "key", "wrong"),
    [
        ("SQLAlchemyPoolExhausted", "summary", "A connection pool is nearly full."),
        ("PoolExporterDatabaseDown", "runbook_url", f"{RUNBOOK_PAGE}#poolexporterdatabaseup"),
        ("SQLAlchemyPoolQueueNearTimeout", "severity", "warning"),
    ],
)
def test_promtool_fails_a_rule_that_says_or_routes_the_wrong_thing(
    promtool: str, tmp_path: Path, alert: str, key: str, wrong: str
) -> None:
    """The cases write down each alert's labels and annotations: a wrong summary, runbook URL
    or severity in the rules under test makes promtool fail for that alert."""
    doc = yaml.safe_load(RULES.read_text())
    rule = next(r for r in alert_rules(doc["groups"]) if r["alert"] == alert)
    rule["labels" if key == "severity" else "annotations"][key] = wrong
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(yaml.safe_dump(doc))
    tests = yaml.safe_load(
        (ALERTS_DIR / promtool_cases.TESTS_DIR / "evaluation-15s.test.yml").read_text()
    )
    tests["rule_files"] = [str(broken)]
    path = tmp_path / "cases.test.yml"
    path.write_text(yaml.safe_dump(tests))
    result = promtool_test(promtool, path, cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"alertname: {alert}" in result.stdout + result.stderr
    assert wrong in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("values", "text"),
    [
        ([1.0, 1.0, 1.0, 1.0], "1+0x3"),
        ([5.0, 4.5, 4.0, None, None, None, 2.0, 4.0], "5-0.5x2 stale _x2 2 4"),
        ([None, 13.5, 13.5, 13.5, None, 0.001], "stale 13.5+0x2 stale 0.001"),
    ],
)
def test_series_are_written_in_promtools_expanding_notation(
    values: list[float | None], text: str
) -> None:
    assert promtool_cases.expanding(values) == text
