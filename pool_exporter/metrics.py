"""The metric contract: every name, help text, label and bucket the exporter emits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "histogram", "info"]

POOL_LABEL = "pool"

# Checkout waits: from a millisecond up to and past SQLAlchemy's default 30 s pool timeout,
# so "waited the whole timeout" lands in a bucket of its own instead of +Inf.
WAIT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 45.0, 60.0,
)  # fmt: skip
# How long the application keeps a connection: sub-millisecond queries up to long transactions.
HOLD_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
)  # fmt: skip
# Establishing a DBAPI connection: a local socket to a TLS handshake through a pooler.
CONNECT_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


@dataclass(frozen=True)
class Metric:
    """One metric family of the public contract."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    # How prometheus-client merges this gauge across worker processes (mark_event()'s metrics;
    # the pool metrics have a store of their own, pool_exporter/multiprocess/).
    multiprocess_mode: str = "liveall"

    @property
    def sample(self) -> str:
        """The name of the sample a query selects (`_total` for counters)."""
        return self.name + "_total" if self.kind == "counter" else self.name

    @property
    def label_names(self) -> tuple[str, ...]:
        return (POOL_LABEL, *self.labels)


CONNECTIONS = Metric(
    "sqlalchemy_pool_connections",
    "gauge",
    "Connections of the pool by state: in_use (checked out) or idle (open, in the pool).",
    ("state",),
)
OVERFLOW = Metric(
    "sqlalchemy_pool_overflow_connections",
    "gauge",
    "Open connections beyond pool_size (QueuePool overflow).",
)
SIZE = Metric("sqlalchemy_pool_size", "gauge", "Configured pool_size.")
MAX_OVERFLOW = Metric("sqlalchemy_pool_max_overflow", "gauge", "Configured max_overflow.")
MAX_CONNECTIONS = Metric(
    "sqlalchemy_pool_max_connections",
    "gauge",
    "Most connections the pool opens at once: pool_size + max_overflow.",
)
TIMEOUT = Metric(
    "sqlalchemy_pool_timeout_seconds",
    "gauge",
    "Configured pool timeout: how long a checkout waits before it raises TimeoutError.",
)
WAITING = Metric(
    "sqlalchemy_pool_waiting_checkouts",
    "gauge",
    "Callers inside the pool's checkout right now, waiting for a connection.",
)
CHECKOUT_WAIT = Metric(
    "sqlalchemy_pool_checkout_wait_seconds",
    "histogram",
    "Time from asking the pool for a connection to getting one (successful checkouts).",
    buckets=WAIT_BUCKETS,
)
CHECKOUTS = Metric("sqlalchemy_pool_checkouts", "counter", "Successful checkouts from the pool.")
CHECKOUT_TIMEOUTS = Metric(
    "sqlalchemy_pool_checkout_timeouts",
    "counter",
    "Checkouts that raised the pool's TimeoutError to the application.",
)
CHECKOUT_CANCELLATIONS = Metric(
    "sqlalchemy_pool_checkout_cancellations",
    "counter",
    "Checkouts abandoned by the caller while waiting (asyncio cancellation, interrupts).",
)
CHECKOUT_ERRORS = Metric(
    "sqlalchemy_pool_checkout_errors",
    "counter",
    "Checkouts that failed with an error other than a pool timeout or a cancellation.",
)
HOLD = Metric(
    "sqlalchemy_pool_connection_hold_seconds",
    "histogram",
    "Time a connection stays checked out: checkout to checkin (or detach).",
    buckets=HOLD_BUCKETS,
)
CONNECTS = Metric(
    "sqlalchemy_pool_connects", "counter", "New DBAPI connections opened by the pool."
)
CONNECT_ERRORS = Metric(
    "sqlalchemy_pool_connect_errors",
    "counter",
    "Failed attempts to open a DBAPI connection (the database refused or was unreachable).",
)
CONNECT_TIME = Metric(
    "sqlalchemy_pool_connect_seconds",
    "histogram",
    "Time to open a new DBAPI connection.",
    buckets=CONNECT_BUCKETS,
)
CLOSES = Metric(
    "sqlalchemy_pool_closes", "counter", "DBAPI connections closed (pooled or detached)."
)
DETACHES = Metric(
    "sqlalchemy_pool_detaches",
    "counter",
    "Connections detached from the pool; they no longer count against it.",
)
INVALIDATIONS = Metric(
    "sqlalchemy_pool_invalidations",
    "counter",
    "Connections invalidated; soft ones are replaced at their next checkout.",
    ("soft",),
)
INFO = Metric(
    "sqlalchemy_pool",
    "info",
    "The instrumented pool: its class, dialect and driver.",
    ("pool_class", "dialect", "driver"),
)
HOOK_ERRORS = Metric(
    "pool_exporter_hook_errors",
    "counter",
    "Exceptions raised inside pool-exporter's own hooks, swallowed so the application goes on.",
    ("hook",),
)

ALL: tuple[Metric, ...] = (
    CONNECTIONS,
    OVERFLOW,
    SIZE,
    MAX_OVERFLOW,
    MAX_CONNECTIONS,
    TIMEOUT,
    WAITING,
    CHECKOUT_WAIT,
    CHECKOUTS,
    CHECKOUT_TIMEOUTS,
    CHECKOUT_CANCELLATIONS,
    CHECKOUT_ERRORS,
    HOLD,
    CONNECTS,
    CONNECT_ERRORS,
    CONNECT_TIME,
    CLOSES,
    DETACHES,
    INVALIDATIONS,
    INFO,
    HOOK_ERRORS,
)

# Capacity is only defined for queue pools; the exporter leaves these out for the others.
CAPACITY: tuple[Metric, ...] = (OVERFLOW, SIZE, MAX_OVERFLOW, MAX_CONNECTIONS, TIMEOUT)

HOOKS: tuple[str, ...] = (
    "checkout",
    "checkin",
    "detach",
    "connect",
    "close",
    "close_detached",
    "invalidate",
    "soft_invalidate",
    "recreate",
)


# -- what the sidecar measures itself and about the database (`pool-exporter sidecar`) --------


@dataclass(frozen=True)
class ExporterMetric(Metric):
    """A metric about the directory or the database rather than one pool: no `pool` label."""

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.labels


MULTIPROCESS_UP = ExporterMetric(
    "pool_exporter_multiprocess_up",
    "gauge",
    "1 if the sidecar merged the workers' metric files at this scrape, 0 if that failed.",
)
MULTIPROCESS_SCRAPE = ExporterMetric(
    "pool_exporter_multiprocess_scrape_duration_seconds",
    "gauge",
    "Time this scrape spent finding dead workers and merging the workers' metric files.",
)
MULTIPROCESS_FILES = ExporterMetric(
    "pool_exporter_multiprocess_files",
    "gauge",
    "Files the sidecar read at this scrape: live workers' pool stats and prometheus-client *.db.",
)
MULTIPROCESS_BAD_FILES = ExporterMetric(
    "pool_exporter_multiprocess_bad_files",
    "gauge",
    "Files in the multiprocess directory skipped at this scrape, by reason: symlink, "
    "not_regular (FIFO, device, directory), unreadable, too_large, format, cannot_remove.",
    ("reason",),
)
BAD_FILE_REASONS: tuple[str, ...] = (
    "symlink",
    "not_regular",
    "unreadable",
    "too_large",
    "format",
    "cannot_remove",
)
MULTIPROCESS_LIVE_WORKERS = ExporterMetric(
    "pool_exporter_multiprocess_live_workers",
    "gauge",
    "Instrumented processes holding their liveness lock in the multiprocess directory.",
)
MULTIPROCESS_DEAD_WORKERS = ExporterMetric(
    "pool_exporter_multiprocess_dead_workers",
    "counter",
    "Exited or killed processes whose gauges the sidecar dropped; their counts stay summed.",
)
DATABASE_UP = ExporterMetric(
    "pool_exporter_database_up",
    "gauge",
    "1 if the database answered the sidecar's queries at this scrape, 0 if not.",
)
DATABASE_SCRAPE = ExporterMetric(
    "pool_exporter_database_scrape_duration_seconds",
    "gauge",
    "Time this scrape spent connecting to and querying the database.",
)
# The application_name under which the sidecar counts every name beyond its cap
# (--database-max-applications). Never the name of a series of its own: a client that really
# calls itself this is counted here too, so the value always means "the folded rest".
OTHER_APPLICATIONS = "(other)"
DATABASE_CONNECTIONS = ExporterMetric(
    "pool_exporter_database_connections",
    "gauge",
    "Client connections open on the server (pg_stat_activity, client backends) by database, "
    f"state and application_name (the busiest names; the rest as {OTHER_APPLICATIONS}).",
    ("database", "state", "application_name"),
)
DATABASE_APPLICATION_NAMES = ExporterMetric(
    "pool_exporter_database_application_names",
    "gauge",
    "Distinct application_name values among the client connections; beyond the sidecar's "
    f"--database-max-applications, all but the busiest are counted as {OTHER_APPLICATIONS}.",
)
DATABASE_MAX_CONNECTIONS = ExporterMetric(
    "pool_exporter_database_max_connections",
    "gauge",
    "The server's max_connections setting.",
)
DATABASE_RESERVED_CONNECTIONS = ExporterMetric(
    "pool_exporter_database_reserved_connections",
    "gauge",
    "Connection slots reserved for privileged roles: superuser_reserved_connections plus "
    "reserved_connections (PostgreSQL 16+).",
)
DATABASE_FREE_CONNECTIONS = ExporterMetric(
    "pool_exporter_database_free_connections",
    "gauge",
    "Connection slots still open to ordinary roles: max_connections minus reserved minus the "
    "client connections open now (not below 0).",
)

MULTIPROCESS: tuple[Metric, ...] = (
    MULTIPROCESS_UP,
    MULTIPROCESS_SCRAPE,
    MULTIPROCESS_FILES,
    MULTIPROCESS_BAD_FILES,
    MULTIPROCESS_LIVE_WORKERS,
    MULTIPROCESS_DEAD_WORKERS,
)
DATABASE: tuple[Metric, ...] = (
    DATABASE_UP,
    DATABASE_SCRAPE,
    DATABASE_CONNECTIONS,
    DATABASE_APPLICATION_NAMES,
    DATABASE_MAX_CONNECTIONS,
    DATABASE_RESERVED_CONNECTIONS,
    DATABASE_FREE_CONNECTIONS,
)


# -- events the application marks (`pool_exporter.mark_event`), shown as dashboard annotations --

EVENTS = ExporterMetric(
    "pool_exporter_events",
    "counter",
    "Events the application marked with mark_event() (a push, a deploy, a campaign), by name.",
    ("event",),
)
EVENT_LAST_TIMESTAMP = ExporterMetric(
    "pool_exporter_event_last_timestamp_seconds",
    "gauge",
    "Unix time of the latest mark_event() of this name: the dashboard's annotation time.",
    ("event",),
    # The latest event across workers, dead ones included: an event a worker marked before it
    # exited still happened.
    multiprocess_mode="max",
)
EVENT: tuple[Metric, ...] = (EVENTS, EVENT_LAST_TIMESTAMP)
