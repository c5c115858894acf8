"""The real-Prometheus helper: scrapes a target, evaluates rules, refuses bad PromQL, stops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Gauge, start_http_server

from pool_exporter.incident.promserver import PrometheusServer, QueryError, find_prometheus

from .support.binaries import require_binary
from .support.procs import wait_until


@pytest.fixture(scope="module")
def prometheus_binary() -> str:
    require_binary("prometheus")
    found = find_prometheus()
    assert found is not None
    return found


@pytest.fixture
def target() -> Iterator[str]:
    registry = CollectorRegistry()
    Gauge("promserver_test_value", "A value to scrape.", registry=registry).set(42)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()


def test_scrapes_target_evaluates_rules_and_stops(
    prometheus_binary: str, target: str, tmp_path: Path
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n"
        "  - name: t\n"
        "    rules:\n"
        "      - record: job:promserver_test_value:doubled\n"
        "        expr: promserver_test_value * 2\n"
        "      - alert: ValueHigh\n"
        "        expr: promserver_test_value > 1\n"
    )
    server = PrometheusServer([target], rule_files=[rules], interval=0.2, binary=prometheus_binary)
    with server as prom:
        result = wait_until(lambda: prom.query("promserver_test_value"), timeout=20)
        assert float(result[0]["value"][1]) == 42.0
        assert result[0]["metric"]["job"] == "pool-exporter"
        assert prom.targets_up()
        doubled = wait_until(lambda: prom.query("job:promserver_test_value:doubled"), timeout=20)
        assert float(doubled[0]["value"][1]) == 84.0
        names = {a["labels"]["alertname"] for a in prom.alerts()}
        assert names == {"ValueHigh"}
        work_dir = prom.work_dir
        assert (work_dir / "prometheus.yml").is_file()
    assert not work_dir.exists(), "a temporary work dir is removed on stop"
    server.stop()  # idempotent


def test_bad_expression_raises_query_error_naming_it(prometheus_binary: str) -> None:
    with PrometheusServer(binary=prometheus_binary) as prom:
        with pytest.raises(QueryError, match=r"rate\(up\)"):
            prom.query("rate(up)")
        assert prom.query("vector(1)")[0]["value"][1] == "1"
        assert prom.query("1 + 1")[0]["value"][1] == "2"


def test_missing_rule_file_is_an_error_before_starting(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="does not exist"):
        PrometheusServer(rule_files=[tmp_path / "nope.yml"]).start()
