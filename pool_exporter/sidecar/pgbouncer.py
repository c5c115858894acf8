"""Scrape-time collector of PgBouncer's admin console: between the pools and the database.

The admin console speaks only the simple query protocol, so the sidecar's connection is in
autocommit with psycopg's client-side-binding cursor and no prepared statements. Each pooler
keeps one connection between scrapes, as the database view does: a pooler near
max_client_conn, which is when this view matters, would refuse a sidecar that connected per
scrape. A pooler that is down or refuses is `pool_exporter_pgbouncer_up 0` and one log line;
the other poolers and every other metric keep being served.

Pools are (database, user) pairs, and users and databases can come and go (auto-databases,
per-tenant users), so only the busiest pools get series of their own; the rest are summed
under OTHER_POOLS. Databases (SHOW DATABASES, SHOW STATS) are configured ones, but capped the
same way, kept by name so that a counter's series does not jump between kept and folded.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import threading
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from pool_exporter import metrics as m

from .urls import DatabaseUrlError, Target, parse_url, safe_error

log = logging.getLogger("pool_exporter")

ADMIN_DATABASE = "pgbouncer"
APPLICATION_NAME = "pool-exporter-sidecar"
DEFAULT_MAX_POOLS = 50

_NAME = re.compile(r"[A-Za-z0-9_.:-]+")
# SHOW POOLS columns by state; older PgBouncers lack some (the cancel ones came in 1.18).
_CLIENT_STATES = {"cl_active": "active", "cl_waiting": "waiting"}
_SERVER_STATES = {
    "sv_active": "active",
    "sv_idle": "idle",
    "sv_used": "used",
    "sv_tested": "tested",
    "sv_login": "login",
}
# SHOW STATS totals in microseconds, and the counters they become.
_STATS = {
    "total_xact_count": (m.PGBOUNCER_TRANSACTIONS, 1.0),
    "total_query_count": (m.PGBOUNCER_QUERIES, 1.0),
    "total_wait_time": (m.PGBOUNCER_CLIENT_WAIT, 1e-6),
    "total_xact_time": (m.PGBOUNCER_SERVER_TRANSACTION_TIME, 1e-6),
    "total_query_time": (m.PGBOUNCER_SERVER_QUERY_TIME, 1e-6),
}
_DATABASES = {
    "pool_size": m.PGBOUNCER_DB_POOL_SIZE,
    "reserve_pool": m.PGBOUNCER_DB_RESERVE_POOL,
    "max_connections": m.PGBOUNCER_DB_MAX_CONNECTIONS,
    "current_connections": m.PGBOUNCER_DB_CURRENT_CONNECTIONS,
    "paused": m.PGBOUNCER_DB_PAUSED,
    "disabled": m.PGBOUNCER_DB_DISABLED,
}


class PoolerListError(ValueError):
    """A pooler list that cannot be used; the message never repeats a URL."""


@dataclass(frozen=True)
class Pooler:
    name: str
    target: Target


def parse_poolers(text: str) -> list[Pooler]:
    """Poolers, one per line (or separated by spaces): `name=URL`, or a bare URL named after
    its host and port. Blank lines and lines starting with # are skipped."""
    poolers: list[Pooler] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        for item in line.split():
            name, sep, url = item.partition("=")
            if not sep or "://" in name:  # a bare URL (its query may hold '=')
                name, url = "", item
            if name and not _NAME.fullmatch(name):
                raise PoolerListError(
                    f"pooler {number}: the name before '=' may hold letters, digits and . _ : -"
                )
            try:
                target = parse_url(url)
            except DatabaseUrlError as exc:
                raise PoolerListError(f"pooler {number}: {exc}") from None
            dbname = target.kwargs.setdefault("dbname", ADMIN_DATABASE)
            if dbname != ADMIN_DATABASE:
                raise PoolerListError(
                    f"pooler {number}: the URL must name PgBouncer's admin database "
                    f"/{ADMIN_DATABASE}, not /{dbname}"
                )
            host = target.kwargs.get("host") or "localhost"
            name = name or f"{host}:{target.kwargs.get('port', 6432)}"
            target.kwargs.setdefault("port", 6432)
            shown = f"{host}:{target.kwargs['port']}/{ADMIN_DATABASE}"
            poolers.append(Pooler(name, Target(target.kwargs, shown, target.password)))
    names = [p.name for p in poolers]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise PoolerListError(f"pooler names must differ; {', '.join(doubled)} is given twice")
    if not poolers:
        raise PoolerListError("the pooler list holds no URL")
    return poolers


Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Snapshot:
    pools: Rows
    stats: Rows
    databases: Rows
    config: dict[str, str]
    lists: dict[str, int]


def maxwait_seconds(row: dict[str, Any]) -> float:
    """PgBouncer splits the oldest client's wait in whole seconds and the microseconds past
    them; reading maxwait alone would say 0 for any wait under a second."""
    return float(row.get("maxwait") or 0) + float(row.get("maxwait_us") or 0) / 1e6


def fold_pools(pools: Rows, limit: int) -> tuple[Rows, int]:
    """The pools with only the `limit` busiest (clients plus server connections; ties to the
    name that sorts first) kept, the rest summed as OTHER_POOLS (their longest wait kept);
    and how many pools there were."""

    def load(row: dict[str, Any]) -> int:
        return sum(int(row.get(c) or 0) for c in (*_CLIENT_STATES, *_SERVER_STATES))

    ranked = sorted(pools, key=lambda r: (-load(r), r["database"], r["user"]))
    kept = ranked[:limit]
    rest = ranked[limit:]
    if rest:
        other: dict[str, Any] = {"database": m.OTHER_POOLS, "user": m.OTHER_POOLS}
        for column in (*_CLIENT_STATES, *_SERVER_STATES):
            other[column] = sum(int(r.get(column) or 0) for r in rest)
        other["maxwait"] = max(maxwait_seconds(r) for r in rest)
        kept.append(other)
    return sorted(kept, key=lambda r: (r["database"], r["user"])), len(pools)


def keep_databases(names: Iterable[str], limit: int) -> set[str]:
    return set(sorted(set(names))[:limit])


def per_database(
    rows: Rows, key: str, columns: Iterable[str], limit: int
) -> list[tuple[str, Counter[str]]]:
    """The columns summed per database, databases past the first `limit` names as one."""
    kept = keep_databases((r[key] for r in rows), limit)
    sums: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        db = row[key] if row[key] in kept else m.OTHER_POOLS
        for column in columns:
            sums[db][column] += int(row.get(column) or 0)
    return sorted(sums.items())


class PgBouncerCollector(Collector):
    """`pool_exporter_pgbouncer_*`: what each PgBouncer says about its pools at scrape time."""

    def __init__(
        self,
        poolers: Sequence[Pooler],
        *,
        timeout: float = 5.0,
        max_pools: int = DEFAULT_MAX_POOLS,
    ) -> None:
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ValueError(f"the pooler timeout must be a positive number, got {timeout!r}")
        if isinstance(max_pools, bool) or not (isinstance(max_pools, int) and max_pools >= 0):
            raise ValueError(f"max_pools must be a whole number, 0 or more, got {max_pools!r}")
        self.poolers = list(poolers)
        self.timeout = timeout
        self.max_pools = max_pools
        self._conns: dict[str, Any] = {}
        self._up: dict[str, bool] = {}
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        # Defined so that registering does not connect to the poolers.
        return [_family(metric) for metric in m.PGBOUNCER]

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Any] = {metric.name: _family(metric) for metric in m.PGBOUNCER}
        with self._lock:  # one scrape at a time on the kept connections
            for pooler in self.poolers:
                t0 = perf_counter()
                snapshot = self._snapshot(pooler)
                families[m.PGBOUNCER_UP.name].add_metric([pooler.name], 1 if snapshot else 0)
                if snapshot is not None:
                    self._add(families, pooler.name, snapshot)
                families[m.PGBOUNCER_SCRAPE.name].add_metric([pooler.name], perf_counter() - t0)
        yield from families.values()

    def close(self) -> None:
        with self._lock:
            for pooler in self.poolers:
                self._drop(pooler)

    def _add(self, f: dict[str, Any], name: str, s: Snapshot) -> None:
        pools, count = fold_pools(s.pools, self.max_pools)
        f[m.PGBOUNCER_POOLS.name].add_metric([name], count)
        for row in pools:
            labels = [name, row["database"], row["user"]]
            for column, state in _CLIENT_STATES.items():
                f[m.PGBOUNCER_CLIENTS.name].add_metric([*labels, state], int(row[column] or 0))
            for column, state in _SERVER_STATES.items():
                if column in row:
                    f[m.PGBOUNCER_SERVERS.name].add_metric([*labels, state], int(row[column] or 0))
            f[m.PGBOUNCER_MAXWAIT.name].add_metric(labels, maxwait_seconds(row))

        default_mode = s.config.get("pool_mode", "")
        named = keep_databases((r["name"] for r in s.databases), self.max_pools)
        for row in s.databases:
            if row["name"] in named:
                mode = row.get("pool_mode") or default_mode
                f[m.PGBOUNCER_DB_INFO.name].add_metric([name, row["name"]], {"pool_mode": mode})
        for db, values in per_database(s.databases, "name", _DATABASES, self.max_pools):
            for column, metric in _DATABASES.items():
                f[metric.name].add_metric([name, db], values[column])
        for db, values in per_database(s.stats, "database", _STATS, self.max_pools):
            for column, (counter, scale) in _STATS.items():
                f[counter.name].add_metric([name, db], values[column] * scale)

        for key, metric in (
            ("max_client_conn", m.PGBOUNCER_MAX_CLIENT_CONN),
            ("default_pool_size", m.PGBOUNCER_DEFAULT_POOL_SIZE),
        ):
            if key in s.config:
                f[metric.name].add_metric([name], float(s.config[key]))
        f[m.PGBOUNCER_CONFIG_INFO.name].add_metric([name], {"pool_mode": default_mode})
        for item, items in sorted(s.lists.items()):
            f[m.PGBOUNCER_LIST_ITEMS.name].add_metric([name, item], items)

    def _snapshot(self, pooler: Pooler) -> Snapshot | None:
        reused = pooler.name in self._conns
        try:
            try:
                snapshot = self._query(pooler)
            except Exception:
                if not reused:
                    raise
                # The kept connection may have died (pooler restart, client_idle_timeout):
                # one fresh attempt before reporting the pooler as down.
                self._drop(pooler)
                snapshot = self._query(pooler)
        except Exception as exc:
            self._drop(pooler)
            self._report(pooler, False, exc)
            return None
        self._report(pooler, True, None)
        return snapshot

    def _query(self, pooler: Pooler) -> Snapshot:
        conn = self._connection(pooler)

        def show(what: str) -> Rows:
            with conn.cursor() as cur:
                cur.execute(f"SHOW {what}")
                columns = [c.name for c in cur.description or ()]
                return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]

        # The admin console's own pseudo-database is the sidecar's connection, not the app's.
        def ours(row: dict[str, Any], key: str) -> bool:
            return row.get(key) != ADMIN_DATABASE

        return Snapshot(
            pools=[r for r in show("POOLS") if ours(r, "database")],
            stats=[r for r in show("STATS") if ours(r, "database")],
            databases=[r for r in show("DATABASES") if ours(r, "name")],
            config={str(r["key"]): str(r["value"]) for r in show("CONFIG")},
            lists={str(r["list"]): int(r["items"]) for r in show("LISTS")},
        )

    def _connection(self, pooler: Pooler) -> Any:
        conn = self._conns.get(pooler.name)
        if conn is None or conn.closed:
            import psycopg

            kwargs = {
                "application_name": APPLICATION_NAME,
                **pooler.target.kwargs,
                # libpq rounds connect_timeout up to 2 s; tcp_user_timeout bounds a dead peer.
                # The console has no statement_timeout; it answers from memory.
                "connect_timeout": max(2, math.ceil(self.timeout)),
                "tcp_user_timeout": max(1, int(self.timeout * 1000)),
                "autocommit": True,
                "prepare_threshold": None,
                # Simple query protocol: the only one the admin console understands.
                "cursor_factory": psycopg.ClientCursor,
            }
            conn = psycopg.connect(**kwargs)
            self._conns[pooler.name] = conn
        return conn

    def _drop(self, pooler: Pooler) -> None:
        conn = self._conns.pop(pooler.name, None)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _report(self, pooler: Pooler, up: bool, exc: Exception | None) -> None:
        # One line when the state changes, not one per scrape.
        previous = self._up.get(pooler.name)
        self._up[pooler.name] = up
        if up:
            if previous is False:
                log.info("pooler %s (%s) is reachable again", pooler.name, pooler.target.display)
            return
        text = safe_error(pooler.target, exc)
        log.log(
            logging.DEBUG if previous is False else logging.ERROR,
            "pooler %s (%s) cannot be queried (pool_exporter_pgbouncer_up 0; every other "
            "metric is still served): %s",
            pooler.name,
            pooler.target.display,
            text,
        )


def _family(metric: m.Metric) -> Metric:
    labels = list(metric.label_names)
    if metric.kind == "counter":
        return CounterMetricFamily(metric.name, metric.help, labels=labels)
    if metric.kind == "info":
        # The last label is the info's value (pool_mode), given as a dict per sample.
        return InfoMetricFamily(metric.name, metric.help, labels=labels[:-1])
    return GaugeMetricFamily(metric.name, metric.help, labels=labels)
