"""What the stack's lower layers did during a push, sampled straight from them while it runs:
the database's connections (pg_stat_activity), PgBouncer's queue (SHOW POOLS), and the alerts
Prometheus fired. Direct samples every 50 ms, since a peak between two scrapes would be lost
in the sidecar's series."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from types import TracebackType

import psycopg

from pool_exporter.incident.promserver import PrometheusServer

INTERVAL = 0.05
ALERTS_EVERY = 0.5


@dataclass
class Peaks:
    database_connections: int = 0  # the stack role's connections to its database
    pooler_waiting: int = 0  # clients queued in PgBouncer (cl_waiting)
    pooler_longest_wait: float = 0.0  # the oldest waiting client's wait (maxwait), seconds
    pooler_servers: int = 0  # PgBouncer's server connections of the pool
    alerts: dict[str, float] = field(default_factory=dict)  # alertname: unix time first firing
    samples: int = 0
    failures: list[str] = field(default_factory=list)


class Watch:
    """`with Watch(...) as watch:` samples until the block ends; then `watch.peaks`."""

    def __init__(
        self,
        *,
        admin_url: str,
        pooler_admin_url: str,
        database: str,
        user: str,
        prometheus: PrometheusServer | None,
    ) -> None:
        self.admin_url = admin_url
        self.pooler_admin_url = pooler_admin_url
        self.database = database
        self.user = user
        self.prometheus = prometheus
        self.peaks = Peaks()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stack-watch", daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        try:
            self._watch()
        except Exception as exc:  # cannot connect: the burst reports that no sample was taken
            self.peaks.failures.append(f"{type(exc).__name__}: {exc}")

    def _watch(self) -> None:
        with (
            psycopg.connect(self.admin_url, autocommit=True) as pg,
            psycopg.connect(
                self.pooler_admin_url, autocommit=True, cursor_factory=psycopg.ClientCursor
            ) as pooler,
        ):
            next_alerts = 0.0
            while True:
                stopping = self._stop.is_set()  # one more sample after the push ended
                try:
                    self._sample(pg, pooler)
                    if self.prometheus is not None and time.monotonic() >= next_alerts:
                        next_alerts = time.monotonic() + ALERTS_EVERY
                        self._alerts(self.prometheus)
                except Exception as exc:  # the push goes on; the burst reports the loss
                    self.peaks.failures.append(f"{type(exc).__name__}: {exc}")
                if stopping:
                    return
                self._stop.wait(INTERVAL)

    def _sample(self, pg: psycopg.Connection[tuple[int]], pooler: psycopg.Connection) -> None:
        row = pg.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND usename = %s "
            "AND backend_type = 'client backend'",
            (self.database, self.user),
        ).fetchone()
        cur = pooler.execute("SHOW POOLS")
        columns = [c.name for c in cur.description or ()]
        pools = [dict(zip(columns, r, strict=True)) for r in cur.fetchall()]
        mine = [p for p in pools if p["database"] == self.database and p["user"] == self.user]
        p = self.peaks
        p.samples += 1
        p.database_connections = max(p.database_connections, int(row[0]) if row else 0)
        for pool in mine:
            p.pooler_waiting = max(p.pooler_waiting, int(pool["cl_waiting"]))
            wait = int(pool["maxwait"]) + int(pool["maxwait_us"]) / 1e6
            p.pooler_longest_wait = max(p.pooler_longest_wait, wait)
            servers = sum(int(pool[k]) for k in ("sv_active", "sv_idle", "sv_used", "sv_tested"))
            p.pooler_servers = max(p.pooler_servers, servers + int(pool["sv_login"]))

    def _alerts(self, prometheus: PrometheusServer) -> None:
        now = time.time()
        for alert in prometheus.alerts():
            if alert["state"] == "firing":
                self.peaks.alerts.setdefault(alert["labels"]["alertname"], now)
