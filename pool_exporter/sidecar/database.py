"""Scrape-time collector of the database's own view of its connections (PostgreSQL, psycopg 3).

The pools only know their own connections; the server knows all of them, poolers and other
services included. A failure is `pool_exporter_database_up 0` and one log line, never an
exception out of the scrape: the application-side metrics must keep being served.

One connection is kept open between scrapes: when the server runs out of slots, which is when
this view matters most, a sidecar that connected per scrape would be refused too.

Clients choose their application_name (some put a pid or a host name in it), so only the
busiest names get series of their own; the rest are counted together, and no connection is
lost from the sums. Roles take a cap of their own, those nearest their connection limit first.

What the database is stuck on: the oldest open transaction and the longest idle-in-transaction
session of each application, and the connection limits of databases and roles beside the
connections each holds (a role's limit refuses its connections before max_connections does).
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from time import perf_counter
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from pool_exporter import metrics as m

from .urls import parse_url, safe_error

log = logging.getLogger("pool_exporter")

APPLICATION_NAME = "pool-exporter-sidecar"
DEFAULT_MAX_APPLICATIONS = 20
DEFAULT_MAX_ROLES = 20

# Client backends only: background workers and WAL senders do not take max_connections slots.
# By login role too, so that the counts by application and by role come from one reading of
# pg_stat_activity and agree. The ages: since an idle-in-transaction session's last statement
# ended (state_change), and since a transaction began (xact_start), leaving out the sidecar's
# own query; NULL (not counted) where the sidecar's role may not see another role's sessions.
_ACTIVITY = """
SELECT coalesce(datname, ''), coalesce(state, 'unknown'), coalesce(application_name, ''),
       coalesce(usename, ''), count(*),
       max(extract(epoch FROM now() - state_change))
           FILTER (WHERE state LIKE 'idle in transaction%'),
       max(extract(epoch FROM now() - xact_start)) FILTER (WHERE pid <> pg_backend_pid())
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY 1, 2, 3, 4
"""
# The server's limits in one round trip: its slots, and the connection limits of the roles that
# log in (a limit bites for no other role) and of the databases that take connections. -1 is no
# limit, and a database's -2 (minor releases since November 2023) marks one whose DROP was
# interrupted.
_LIMITS = """
SELECT 'server', 'max_connections', current_setting('max_connections')::int
UNION ALL
SELECT 'server', 'reserved', current_setting('superuser_reserved_connections')::int
    + coalesce(current_setting('reserved_connections', true), '0')::int
UNION ALL
SELECT 'role', rolname, rolconnlimit FROM pg_roles WHERE rolcanlogin AND rolconnlimit >= 0
UNION ALL
SELECT 'database', datname, datconnlimit FROM pg_database
WHERE datallowconn AND datconnlimit >= 0
"""


Row = tuple[str, str, str, int]  # database, state, application_name, connections
# database, application_name, seconds idle in a transaction, seconds of the oldest transaction
Ages = tuple[str, str, float, float]
RoleRow = tuple[str, int, int]  # role, connection limit (-1: none), connections


@dataclass(frozen=True)
class Snapshot:
    max_connections: int
    reserved: int
    connections: list[Row]
    ages: list[Ages]  # one per (database, application_name) with connections
    roles: list[RoleRow]  # the roles with connections, and the login roles with a limit
    database_limits: dict[str, int]  # datconnlimit of the databases that have one

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
        max_roles: int = DEFAULT_MAX_ROLES,
    ) -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"the database timeout must be a positive number, got {timeout!r}")
        for name, cap in (("max_applications", max_applications), ("max_roles", max_roles)):
            if isinstance(cap, bool) or not (isinstance(cap, int) and cap >= 0):
                raise ValueError(f"{name} must be a whole number, 0 or more, got {cap!r}")
        self.target = parse_url(url)
        self.timeout = timeout
        self.max_applications = max_applications
        self.max_roles = max_roles
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
            self._add(families, snapshot)
        families[m.DATABASE_SCRAPE.name].add_metric([], perf_counter() - t0)
        yield from families.values()

    def _add(self, families: dict[str, GaugeMetricFamily], snapshot: Snapshot) -> None:
        def add(metric: m.Metric, labels: Sequence[str], value: float) -> None:
            families[metric.name].add_metric(list(labels), value)

        add(m.DATABASE_MAX_CONNECTIONS, [], snapshot.max_connections)
        add(m.DATABASE_RESERVED_CONNECTIONS, [], snapshot.reserved)
        add(m.DATABASE_FREE_CONNECTIONS, [], snapshot.free)
        kept, names = busiest_applications(snapshot.connections, self.max_applications)
        add(m.DATABASE_APPLICATION_NAMES, [], names)
        for database, state, application, count in fold_rows(snapshot.connections, kept):
            add(m.DATABASE_CONNECTIONS, [database, state, application], count)
        for database, application, idle, oldest in fold_ages(snapshot.ages, kept):
            add(m.DATABASE_OLDEST_IDLE_IN_TRANSACTION, [database, application], idle)
            add(m.DATABASE_OLDEST_TRANSACTION, [database, application], oldest)
        connected = {row[0] for row in snapshot.connections}
        for database, limit in sorted(snapshot.database_limits.items()):
            if database in connected:  # the databases the connection series name
                add(m.DATABASE_CONNECTION_LIMIT, [database], limit)
        roles, folded = fold_roles(snapshot.roles, self.max_roles)
        add(m.DATABASE_ROLES, [], len(snapshot.roles))
        for role, limit, count in roles:
            add(m.DATABASE_ROLE_CONNECTIONS, [role], count)
            if limit >= 0:
                add(m.DATABASE_ROLE_CONNECTION_LIMIT, [role], limit)
        if folded is not None:
            add(m.DATABASE_ROLE_CONNECTIONS, [m.OTHER_ROLES], folded)

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
            cur.execute(_LIMITS)
            limits: dict[str, dict[str, int]] = {"server": {}, "role": {}, "database": {}}
            for kind, name, limit in cur.fetchall():
                limits[str(kind)][str(name)] = int(limit)
            cur.execute(_ACTIVITY)
            activity = cur.fetchall()
        connections: Counter[tuple[str, str, str]] = Counter()
        per_role: Counter[str] = Counter()
        for database, state, application, role, count, _, _ in activity:
            connections[str(database), str(state), str(application)] += int(count)
            per_role[str(role)] += int(count)
        role_limits = limits["role"]
        return Snapshot(
            limits["server"]["max_connections"],
            limits["server"]["reserved"],
            [(*key, n) for key, n in sorted(connections.items())],
            oldest_per_application((str(r[0]), str(r[2]), r[5], r[6]) for r in activity),
            [
                (role, role_limits.get(role, -1), per_role[role])
                for role in sorted(per_role.keys() | role_limits.keys())
            ],
            limits["database"],
        )

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


def busiest_applications(rows: Sequence[Row], limit: int) -> tuple[set[str], int]:
    """The `limit` application_names holding the most connections (ties go to the name that
    sorts first; OTHER_APPLICATIONS never), and how many distinct names there were."""
    per_name: Counter[str] = Counter()
    for _, _, application, count in rows:
        per_name[application] += count
    ranked = sorted(
        (name for name in per_name if name != m.OTHER_APPLICATIONS),
        key=lambda name: (-per_name[name], name),
    )
    return set(ranked[:limit]), len(per_name)


def fold_rows(rows: Sequence[Row], kept: set[str]) -> list[Row]:
    """The rows with every application_name but `kept` counted as OTHER_APPLICATIONS."""
    folded: Counter[tuple[str, str, str]] = Counter()
    for database, state, application, count in rows:
        name = application if application in kept else m.OTHER_APPLICATIONS
        folded[database, state, name] += count
    return [(*key, count) for key, count in sorted(folded.items())]


def oldest_per_application(
    rows: Iterable[tuple[str, str, float | Decimal | None, float | Decimal | None]],
) -> list[Ages]:
    """(database, application_name, idle in transaction, transaction) rows of any states as
    one per database and application_name: the oldest of each, 0 where there is none (and
    never below 0: another session's clock may be a moment ahead of this query's)."""
    found: dict[tuple[str, str], tuple[float, float]] = {}
    for database, application, idle, oldest in rows:
        was = found.get((database, application), (0.0, 0.0))
        found[database, application] = (
            max(was[0], float(idle or 0)),
            max(was[1], float(oldest or 0)),
        )
    return [(*key, idle, oldest) for key, (idle, oldest) in sorted(found.items())]


def fold_ages(ages: Sequence[Ages], kept: set[str]) -> list[Ages]:
    """The ages with every application_name but `kept` as OTHER_APPLICATIONS, each the oldest
    of the names folded into it: the maxima stay exact."""
    folded = [
        (database, application if application in kept else m.OTHER_APPLICATIONS, idle, oldest)
        for database, application, idle, oldest in ages
    ]
    return oldest_per_application(folded)


def fold_roles(roles: Sequence[RoleRow], limit: int) -> tuple[list[RoleRow], int | None]:
    """The `limit` roles to show, and the connections of the rest (None when none is left
    out). Roles with a connection limit come first, the fullest (connections / limit) first,
    then the roles with the most connections; ties go to the name that sorts first. A role
    named OTHER_ROLES is always among the rest."""

    def rank(row: RoleRow) -> tuple[int, float, str]:
        role, most, count = row
        if most >= 0:
            return (0, -(count / most if most else 0.0), role)
        return (1, -count, role)

    ranked = sorted((r for r in roles if r[0] != m.OTHER_ROLES), key=rank)
    kept = sorted(ranked[:limit])
    shown = {r[0] for r in kept}
    rest = [r[2] for r in roles if r[0] not in shown]
    return kept, (sum(rest) if rest else None)


def _gauge(metric: m.Metric) -> GaugeMetricFamily:
    return GaugeMetricFamily(metric.name, metric.help, labels=list(metric.label_names))
