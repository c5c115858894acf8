"""`pool-exporter demo` as a user runs it: a real process, its /metrics, its PNG, Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from pool_exporter.mixin import data_files

from .support.binaries import require_binary
from .support.procs import free_port, parse, select, wait_until

BIN = Path(sys.executable).parent
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# A rule file of the test's own, so that the demo's alert reporting is exercised whatever
# the project's generated rules look like.
RULES = """\
groups:
- name: demo-test
  rules:
  - alert: TestCallersWaiting
    expr: max by (pool) (sqlalchemy_pool_waiting_checkouts) > 0
    labels: {severity: warning}
"""


def demo(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(BIN / "pool-exporter"), "demo", "--out", str(tmp_path / "demo.png"), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "POOL_EXPORTER_DATABASE_URL": "", "DATABASE_URL": "", **(env or {})},
    )


@pytest.mark.slow
def test_short_demo_times_out_serves_metrics_reports_alerts_and_writes_a_png(
    tmp_path: Path,
) -> None:
    require_binary("prometheus")
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES)
    port = free_port()
    proc = demo(
        tmp_path,
        *("--users", "200", "--pool-timeout", "1", "--duration", "8", "--port", str(port)),
        *("--rules", str(rules), "--json", str(tmp_path / "r.json")),
    )
    try:
        # /metrics answers while the demo runs, with the pool at the incident's settings
        def capacity() -> list[tuple[str, dict[str, str], float]]:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            return select(parse(text), "sqlalchemy_pool_max_connections", pool="demo")

        found = wait_until(capacity, timeout=30, what="the demo's /metrics")
        assert found[0][2] == 15.0
        out, _ = proc.communicate(timeout=90)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert f"metrics: http://127.0.0.1:{port}/metrics" in out
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["timeouts"] > 0 and result["peak_in_use"] == 15
    assert f"timeouts        {result['timeouts']}, the first" in out
    assert "saturated" in out and "longest wait" in out
    assert "alert           TestCallersWaiting (warning) fired" in out
    png = (tmp_path / "demo.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000


def rules_used(tmp_path: Path) -> Path:
    proc = demo(tmp_path, *("--users", "50", "--duration", "3", "--port", str(free_port())))
    out, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, out
    (line,) = [x for x in out.splitlines() if x.startswith("alerts: Prometheus")]
    return Path(line.rsplit(" with ", 1)[1])


@pytest.mark.slow
def test_without_rules_in_the_directory_the_demo_evaluates_the_shipped_ones(
    tmp_path: Path,
) -> None:
    require_binary("prometheus")
    # here the checkout's alerts/; installed from the wheel, the package's copy (test_wheel.py)
    assert rules_used(tmp_path) == data_files.find(data_files.RULES)


@pytest.mark.slow
def test_rules_in_the_directory_are_what_the_demo_evaluates(tmp_path: Path) -> None:
    # where `pool-exporter alerts generate` writes rules with a user's own settings
    require_binary("prometheus")
    mine = tmp_path / data_files.RULES
    mine.parent.mkdir()
    mine.write_text(RULES)
    assert rules_used(tmp_path) == mine


def test_demo_without_prometheus_says_how_to_get_it(tmp_path: Path) -> None:
    proc = demo(
        tmp_path,
        *("--users", "10", "--duration", "1", "--port", str(free_port())),
        env={"PATH": str(BIN), "PROMETHEUS_BIN": ""},
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert "apt-get install prometheus" in out
    assert "requests        " in out


@pytest.mark.slow
def test_ctrl_c_stops_the_demo_with_the_summary_so_far(tmp_path: Path) -> None:
    port = free_port()
    proc = demo(tmp_path, "--no-prometheus", "--port", str(port))  # the full-length default
    try:
        # stopped during the push, while hundreds of callers wait up to 30 s for a connection
        def pushing() -> bool:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            waiting = select(parse(text), "sqlalchemy_pool_waiting_checkouts", pool="demo")
            return bool(waiting) and waiting[0][2] > 100

        wait_until(pushing, timeout=40, what="callers waiting in the demo's pool")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, out
    assert "interrupted     after" in out
    assert "requests        " in out and "never sent" in out
    assert "Traceback" not in out
    assert (tmp_path / "demo.png").read_bytes().startswith(PNG_SIGNATURE)


def test_demo_with_an_unreachable_database_is_one_error_line(tmp_path: Path) -> None:
    proc = demo(
        tmp_path,
        "--no-prometheus",
        env={"POOL_EXPORTER_DATABASE_URL": "postgresql+psycopg://u:hunter2@127.0.0.1:1/x"},
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert out.strip().splitlines()[-1].startswith("error: --database-url: cannot use")
    assert "hunter2" not in out


@pytest.mark.parametrize("args", [["--users", "-5"], ["--pool-timeout", "0"]])
def test_demo_rejects_impossible_settings(tmp_path: Path, args: list[str]) -> None:
    proc = demo(tmp_path, "--no-prometheus", *args)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 2 and out.startswith("error: "), out


def test_demo_without_matplotlib_keeps_its_summary_and_json_and_names_the_extra(
    tmp_path: Path,
) -> None:
    # matplotlib made unimportable, as without the `demo` extra (tests/test_wheel.py does it
    # for real in a fresh virtualenv)
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from pool_exporter.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    result = subprocess.run(
        [
            *(sys.executable, "-c", code, "demo", "--no-prometheus", "--port", str(free_port())),
            *("--users", "30", "--duration", "2", "--json", "r.json", "--out", "demo.png"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
        env={**os.environ, "POOL_EXPORTER_DATABASE_URL": "", "DATABASE_URL": ""},
    )
    assert result.returncode == 2, result
    assert "timeline: matplotlib is not installed" in result.stdout.splitlines()[2]
    assert "requests        " in result.stdout
    assert json.loads((tmp_path / "r.json").read_text())["requests"] > 0
    assert not (tmp_path / "demo.png").exists()
    assert result.stderr == (
        "error: the timeline PNG needs matplotlib, which is not installed: "
        "pip install 'pool-exporter[demo]'\n"
    )
