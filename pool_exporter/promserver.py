"""Run a real Prometheus for a while: scrape given targets, evaluate rule files, answer queries.

For the demo and the tests: a throwaway server on loopback with its own temporary storage,
stopped (and its files removed) when the context ends. The configuration is written as JSON,
which YAML parsers accept, so no YAML library is needed.
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

from .promapi import PrometheusAPI, PrometheusError

BINARIES = ("prometheus",)
INSTALL_HINT = "apt-get install prometheus"


def find_prometheus() -> str | None:
    """The `prometheus` binary: $PROMETHEUS_BIN, else on PATH (Debian: /usr/bin/prometheus)."""
    explicit = os.environ.get("PROMETHEUS_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return next((p for p in map(shutil.which, BINARIES) if p), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def seconds_text(value: float) -> str:
    """A Prometheus duration for a number of seconds (`1s`, `500ms`)."""
    if value >= 1 and float(value).is_integer():
        return f"{int(value)}s"
    return f"{round(value * 1000)}ms"


class ServerProcess:
    """A child process serving HTTP on loopback, stopped and cleaned up on exit."""

    name = "server"

    def __init__(self, port: int | None, ready_path: str, startup_timeout: float) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ready_path = ready_path
        self.startup_timeout = startup_timeout
        self.dir = Path(tempfile.mkdtemp(prefix=f"pool-exporter-{self.name}-"))
        self.log = self.dir / f"{self.name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def __enter__(self) -> Any:
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                output = self.log.read_text(errors="replace")[-2000:]
                self.__exit__()
                raise PrometheusError(f"{self.name} exited at start-up: {output}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.__exit__()
        raise PrometheusError(f"{self.name} did not become ready within {self.startup_timeout} s")

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)

    def logs(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


class PrometheusServer(ServerProcess):
    """`with PrometheusServer(["127.0.0.1:9464"], rule_files=[...], interval=1) as prom:`

    Scrapes every target every `interval` seconds and evaluates the rules as often, sending
    alerts to `alertmanagers` (host:port) when given."""

    name = "prometheus"

    def __init__(
        self,
        targets: Sequence[str],
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
        super().__init__(port, "/-/ready", startup_timeout)
        found = binary or find_prometheus()
        if found is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise PrometheusError(f"no prometheus binary ({INSTALL_HINT})")
        self.binary = found
        self.targets = list(targets)
        self.interval = interval
        self.evaluation_interval = evaluation_interval or interval
        self.alertmanagers = list(alertmanagers)
        self.job = job
        self.rule_files = [Path(r).resolve() for r in rule_files]
        self.api = PrometheusAPI(self.url)

    def config(self) -> dict[str, Any]:
        every = seconds_text(self.interval)
        config: dict[str, Any] = {
            "global": {
                "scrape_interval": every,
                "scrape_timeout": seconds_text(min(self.interval, 10.0)),
                "evaluation_interval": seconds_text(self.evaluation_interval),
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
        config = self.dir / "prometheus.yml"
        config.write_text(json.dumps(self.config(), indent=1))
        return [
            self.binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={self.dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--log.level=warn",
        ]

    def __enter__(self) -> PrometheusServer:
        super().__enter__()
        return self

    # -- the HTTP API -----------------------------------------------------------------

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        return self.api.query(expr, at)

    def alerts(self) -> list[dict[str, Any]]:
        """Active alerts (pending and firing), as `/api/v1/alerts` lists them."""
        alerts: list[dict[str, Any]] = self._get("/api/v1/alerts")["alerts"]
        return alerts

    def rules(self) -> list[dict[str, Any]]:
        groups: list[dict[str, Any]] = self._get("/api/v1/rules")["groups"]
        return groups

    def targets_up(self) -> bool:
        active = self._get("/api/v1/targets")["activeTargets"]
        return bool(active) and all(t.get("health") == "up" for t in active)

    def wait_for_scrape(self, timeout: float = 15.0) -> None:
        """Until every target has been scraped successfully once."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.targets_up():
                return
            time.sleep(0.2)
        raise PrometheusError(f"Prometheus did not scrape {self.targets} within {timeout} s")

    def _get(self, path: str) -> dict[str, Any]:
        return self.api._get(path, {})
