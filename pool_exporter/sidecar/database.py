"""Scrape-time collector of the database's own view of its connections (PostgreSQL, psycopg 3).

The pools only know their own connections; the server knows all of them, poolers and other
services included. A failure is `pool_exporter_database_up 0` and one log line, never an
exception out of the scrape: the application-side metrics must keep being served.

One connection is kept open between scrapes: when the server runs out of slots, which is when
this view matters most, a sidecar that connected per scrape would be refused too.

Clients choose their application_name (some put a pid or a host name in it), so only the
busiest names get series of their own; the rest are counted together, and no connection is
lost from the sums.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pool_exporter import metrics as m

from .urls import parse_url, safe_error

log = logging.getLogger("pool_exporter")

APPLICATION_NAME = "pool-exporter-sidecar"
DEFAULT_MAX_APPLICATIONS = 20

_SETTINGS = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int
"""
# Client backends only: background workers and WAL senders do not take max_connections slots.
_ACTIVITY = """
SELECT coalesce(datname, ''), coalesce(state, 'unknown'), coalesce(application_name, ''),
       count(*)
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY 1, 2, 3
ORDER BY 1, 2, 3
"""


Row = tuple[str, str, str, int]  # database, state, application_name, connections


@dataclass(frozen=True)
class Snapshot:
    max_connections: int
    reserved: int
    connections: list[Row]

    @property
    def free(self) -> int:
        used = sum(row[3] for row in self.connections)
        return max(0, self.max_connections - self.reserved - used)


class DatabaseCollector(Collector):
    """`pool_exporter_database_*`: what PostgreSQL says about its connections at scrape time."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        max_applications: int = DEFAULT_MAX_APPLICATIONS,
    ) -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"the database timeout must be a positive number, got {timeout!r}")
        if isinstance(max_applications, bool) or not (
            isinstance(max_applications, int) and max_applications >= 0
        ):
            raise ValueError(
                f"max_applications must be a whole number, 0 or more, got {max_applications!r}"
            )
        self.target = parse_url(url)
        self.timeout = timeout
        self.max_applications = max_applications
        self._conn: Any = None
        self._lock = threading.Lock()
        self._up: bool | None = None

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Defined so that registering does not query the database.
        return [_gauge(metric) for metric in m.DATABASE]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        t0 = perf_counter()
        with self._lock:  # one query at a time on the one connection
            snapshot = self._snapshot()
        families = {metric.name: _gauge(metric) for metric in m.DATABASE}
        families[m.DATABASE_UP.name].add_metric([], 1 if snapshot else 0)
        if snapshot is not None:
            families[m.DATABASE_MAX_CONNECTIONS.name].add_metric([], snapshot.max_connections)
            families[m.DATABASE_RESERVED_CONNECTIONS.name].add_metric([], snapshot.reserved)
            families[m.DATABASE_FREE_CONNECTIONS.name].add_metric([], snapshot.free)
            rows, names = fold_applications(snapshot.connections, self.max_applications)
            families[m.DATABASE_APPLICATION_NAMES.name].add_metric([], names)
            for database, state, application, count in rows:
                families[m.DATABASE_CONNECTIONS.name].add_metric(
                    [database, state, application], count
                )
        families[m.DATABASE_SCRAPE.name].add_metric([], perf_counter() - t0)
        yield from families.values()

    def close(self) -> None:
        with self._lock:
            self._drop()

    def _snapshot(self) -> Snapshot | None:
        reused = self._conn is not None
        try:
            try:
                snapshot = self._query()
            except Exception:
                if not reused:
                    raise
                # The kept connection may have died (server restart, idle timeout in a
                # pooler): one fresh attempt before reporting the database as down.
                self._drop()
                snapshot = self._query()
        except Exception as exc:
            self._drop()
            self._report(False, exc)
            return None
        self._report(True, None)
        return snapshot

    def _query(self) -> Snapshot:
        conn = self._connection()
        with conn.cursor() as cur:
            cur.execute(_SETTINGS)
            max_connections, superuser_reserved, reserved = cur.fetchone()
            cur.execute(_ACTIVITY)
            rows = [(str(d), str(s), str(a), int(n)) for d, s, a, n in cur.fetchall()]
        return Snapshot(int(max_connections), int(superuser_reserved) + int(reserved), rows)

    def _connection(self) -> Any:
        if self._conn is None or self._conn.closed:
            import psycopg

            timeout_ms = max(1, int(self.timeout * 1000))
            kwargs = {
                "application_name": APPLICATION_NAME,
                **self.target.kwargs,
                # libpq rounds connect_timeout up to 2 s; tcp_user_timeout bounds a dead peer.
                "connect_timeout": max(2, math.ceil(self.timeout)),
                "tcp_user_timeout": timeout_ms,
                "autocommit": True,
            }
            conn = psycopg.connect(**kwargs)
            try:
                conn.execute(f"SET statement_timeout = {timeout_ms}")
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def _report(self, up: bool, exc: Exception | None) -> None:
        # One line when the state changes, not one per scrape.
        previous, self._up = self._up, up
        if up:
            if previous is False:
                log.info("database %s is reachable again", self.target.display)
            return
        message = safe_error(self.target, exc)
        level = logging.DEBUG if previous is False else logging.ERROR
        log.log(
            level,
            "database %s cannot be queried (pool_exporter_database_up 0; the application's "
            "pool metrics are still served): %s",
            self.target.display,
            message,
        )


def fold_applications(rows: Sequence[Row], limit: int) -> tuple[list[Row], int]:
    """The rows with only the `limit` application_names holding the most connections kept
    (ties go to the name that sorts first), every other name counted as OTHER_APPLICATIONS;
    and how many distinct names there were."""
    per_name: Counter[str] = Counter()
    for _, _, application, count in rows:
        per_name[application] += count
    ranked = sorted(
        (name for name in per_name if name != m.OTHER_APPLICATIONS),
        key=lambda name: (-per_name[name], name),
    )
    kept = set(ranked[:limit])
    folded: Counter[tuple[str, str, str]] = Counter()
    for database, state, application, count in rows:
        name = application if application in kept else m.OTHER_APPLICATIONS
        folded[database, state, name] += count
    return [(*key, count) for key, count in sorted(folded.items())], len(per_name)


def _gauge(metric: m.Metric) -> GaugeMetricFamily:
    return GaugeMetricFamily(metric.name, metric.help, labels=list(metric.label_names))
