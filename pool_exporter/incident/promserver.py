"""Run a real Prometheus for a while: scrape given targets, evaluate rule files, answer queries.

For the demo and the tests: a throwaway server on loopback with its own temporary work
directory, stopped (and the directory removed) when the context ends. The configuration is
written as JSON, which YAML parsers accept, so no YAML library is needed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pool_exporter.durations import text as duration

from .promapi import PrometheusAPI, PrometheusError, QueryError

__all__ = [
    "PrometheusError",
    "PrometheusServer",
    "QueryError",
    "ServerProcess",
    "find_prometheus",
    "free_port",
]

INSTALL_HINT = "apt-get install prometheus"


def find_prometheus() -> str | None:
    """The `prometheus` binary: $PROMETHEUS_BIN, else on PATH (Debian: /usr/bin/prometheus)."""
    explicit = os.environ.get("PROMETHEUS_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("prometheus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """A child process serving HTTP on a loopback port, with a temporary work directory;
    `start()` waits until `ready_path` answers 200, `stop()` ends it (idempotent)."""

    name = "server"
    ready_path = "/-/ready"

    def __init__(self, *, port: int | None = None, startup_timeout: float = 30.0) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"pool-exporter-{self.name}-"))
        self.log = self.work_dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> None:
        command = self.command()
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.logs()[-2000:]
                self.stop()
                raise PrometheusError(f"{self.name} exited at start-up: {output}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise PrometheusError(f"{self.name} did not become ready within {self.startup_timeout} s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, 10)
        shutil.rmtree(self.work_dir, ignore_errors=True)

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PrometheusServer(ServerProcess):
    """`with PrometheusServer(["127.0.0.1:9464"], rule_files=[...], interval=1) as prom:`

    Scrapes every target every `interval` seconds (job "pool-exporter") and evaluates the
    rules as often, sending alerts to `alertmanagers` (host:port) when given."""

    name = "prometheus"

    def __init__(
        self,
        targets: Sequence[str] = (),
        *,
        rule_files: Sequence[Path | str] = (),
        interval: float = 1.0,
        evaluation_interval: float | None = None,
        alertmanagers: Sequence[str] = (),
        job: str = "pool-exporter",
        binary: str | None = None,
        port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.binary = binary or find_prometheus()
        self.targets = list(targets)
        self.interval = interval
        self.evaluation_interval = evaluation_interval or interval
        self.alertmanagers = list(alertmanagers)
        self.job = job
        self.rule_files = [Path(r).resolve() for r in rule_files]
        super().__init__(port=port, startup_timeout=startup_timeout)
        self.api = PrometheusAPI(self.url)

    def config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": duration(self.interval),
                "scrape_timeout": duration(min(self.interval, 10.0)),
                "evaluation_interval": duration(self.evaluation_interval),
            },
            "rule_files": [str(r) for r in self.rule_files],
            "scrape_configs": [
                {"job_name": self.job, "static_configs": [{"targets": self.targets}]}
            ],
        }
        if self.alertmanagers:
            config["alerting"] = {
                "alertmanagers": [{"static_configs": [{"targets": self.alertmanagers}]}]
            }
        return config

    def command(self) -> list[str]:
        if self.binary is None:
            raise PrometheusError(f"no prometheus binary found ({INSTALL_HINT})")
        for rules in self.rule_files:
            if not rules.is_file():
                raise PrometheusError(f"rule file {rules} does not exist")
        config = self.work_dir / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=1))
        return [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--log.level=warn",
        ]

    def __enter__(self) -> PrometheusServer:
        self.start()
        return self

    # -- the HTTP API -----------------------------------------------------------------

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query; raises QueryError naming `expr` when Prometheus refuses it."""
        return self.api.query(expr, at)

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing), as `/api/v1/alerts` lists them."""
        alerts: list[dict[str, Any]] = self.api.get("/api/v1/alerts")["alerts"]
        return alerts

    def targets_up(self) -> bool:
        active = self.api.get("/api/v1/targets")["activeTargets"]
        return bool(active) and all(t.get("health") == "up" for t in active)

    def wait_for_scrape(self, timeout: float = 15.0) -> None:
        """Until every target has been scraped successfully."""
        deadline = time.monotonic() + timeout
        while not self.targets_up():
            if time.monotonic() > deadline:
                raise PrometheusError(f"Prometheus did not scrape {self.targets} in {timeout} s")
            time.sleep(0.2)


def stop_process(process: subprocess.Popen[Any], grace: float) -> None:
    """End `process` if it still runs: SIGTERM, then SIGKILL after `grace` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
