"""Run a real Alertmanager on loopback for a while, and catch what it sends.

`AlertmanagerServer` runs the binary from a configuration file; `route_to_webhook` rewrites an
Alertmanager configuration so every receiver posts to one webhook URL (keeping the routes,
grouping and inhibitions that are being tested); `WebhookReceiver` is that webhook, recording
each notification with the time it arrived.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pool_exporter.incident.promapi import PrometheusError
from pool_exporter.incident.promserver import ServerProcess

BINARIES = ("prometheus-alertmanager", "alertmanager")  # Debian's name, upstream's name
INSTALL_HINT = "apt-get install prometheus-alertmanager"


def find_alertmanager() -> str | None:
    """$ALERTMANAGER_BIN, else on PATH (Debian: /usr/bin/prometheus-alertmanager)."""
    explicit = os.environ.get("ALERTMANAGER_BIN")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return next((p for p in map(shutil.which, BINARIES) if p), None)


class AlertmanagerServer(ServerProcess):
    """`with AlertmanagerServer(config_path) as am:` then point Prometheus at `am.address`.
    Clustering is off (`--cluster.listen-address=`): one instance, no gossip port."""

    name = "alertmanager"

    def __init__(
        self,
        config: Path | str,
        *,
        binary: str | None = None,
        port: int | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        self.binary = binary or find_alertmanager()
        self.config = Path(config).resolve()
        super().__init__(port=port, startup_timeout=startup_timeout)

    def command(self) -> list[str]:
        if self.binary is None:
            raise PrometheusError(f"no alertmanager binary found ({INSTALL_HINT})")
        return [
            self.binary,
            f"--config.file={self.config}",
            f"--storage.path={self.work_dir / 'data'}",
            f"--web.listen-address={self.address}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]

    def __enter__(self) -> AlertmanagerServer:
        self.start()
        return self


def route_to_webhook(
    config: dict[str, Any], url: str, *, timing: dict[str, str] | None = None
) -> dict[str, Any]:
    """A copy of an Alertmanager configuration in which every receiver posts to `url` (its
    name kept, so a notification says which receiver the routes chose), with the routes'
    group_wait/group_interval/repeat_interval replaced by `timing` where given."""
    out = copy.deepcopy(config)
    for receiver in out.get("receivers", []):
        for key in [k for k in receiver if k.endswith("_configs")]:
            del receiver[key]
        receiver["webhook_configs"] = [{"url": url, "send_resolved": True}]

    def retime(route: dict[str, Any]) -> None:
        for key, value in (timing or {}).items():
            if key in route or route is out.get("route"):
                route[key] = value
        for child in route.get("routes", []):
            retime(child)

    if "route" in out:
        retime(out["route"])
    return out


@dataclass(frozen=True)
class Notification:
    """One POST from Alertmanager: when it arrived (unix time) and what it said."""

    at: float
    receiver: str
    status: str
    alerts: list[dict[str, Any]]

    def names(self, state: str = "firing") -> set[str]:
        return {a["labels"].get("alertname", "") for a in self.alerts if a["status"] == state}


class WebhookReceiver:
    """An HTTP server on a loopback port that keeps every notification posted to it."""

    def __init__(self) -> None:
        self.notifications: list[Notification] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                with receiver._lock:
                    receiver.notifications.append(
                        Notification(
                            arrived,
                            body.get("receiver", ""),
                            body.get("status", ""),
                            body.get("alerts", []),
                        )
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass  # Alertmanager's posts are the test's data, not its log

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join()

    def first(self, alertname: str) -> Notification | None:
        """The first notification that carried `alertname` firing."""
        with self._lock:
            return next((n for n in self.notifications if alertname in n.names()), None)

    def received(self) -> list[Notification]:
        with self._lock:
            return list(self.notifications)
