"""The metric contract: every name, help text, label and bucket the exporter emits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "histogram", "info"]
# The suffix prometheus-client gives the one sample of a counter or info family; a histogram
# has three (_bucket, _count, _sum), so a query names those itself.
_SAMPLE_SUFFIX: dict[str, str] = {"counter": "_total", "info": "_info"}

POOL_LABEL = "pool"
WORKER_LABEL = "worker"

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
        """The name of the sample a query selects: `_total` for counters, `_info` for the info
        metric (prometheus-client appends both), the family name otherwise."""
        return self.name + _SAMPLE_SUFFIX.get(self.kind, "")

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
# How a checkout ended, as the wait histogram's `outcome` label says: the timed-out and
# cancelled callers waited too, and during a saturation their waits are the longest.
SUCCESS = "success"
TIMED_OUT = "timeout"
CANCELLED = "cancelled"
FAILED = "error"
OUTCOMES: tuple[str, ...] = (SUCCESS, TIMED_OUT, CANCELLED, FAILED)
CHECKOUT_WAIT = Metric(
    "sqlalchemy_pool_checkout_wait_seconds",
    "histogram",
    "Time from asking the pool for a connection to getting one or giving up, by outcome: "
    "success, timeout (the pool's TimeoutError), cancelled (the caller gave up) or error.",
    ("outcome",),
    buckets=WAIT_BUCKETS,
)
CHECKOUTS = Metric("sqlalchemy_pool_checkouts", "counter", "Successful checkouts from the pool.")
WAITED_CHECKOUTS = Metric(
    "sqlalchemy_pool_waited_checkouts",
    "counter",
    "Successful checkouts that found no idle connection in the pool: they waited for one to "
    "be returned or for a new one to be opened (pgxpool's EmptyAcquireCount).",
)
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
OPENING = Metric(
    "sqlalchemy_pool_opening_connections",
    "gauge",
    "DBAPI connections being opened right now (the driver's connect() called and not yet "
    "returned): a slow or refusing database shows here first.",
)
# Why a DBAPI connection was closed: the SQLAlchemy code path that closed it
# (pool_exporter/closes.py tells them apart).
OVERFLOW_CLOSE = "overflow"
RECYCLE_CLOSE = "recycle"
INVALIDATED_CLOSE = "invalidated"
RESET_FAILED_CLOSE = "reset_failed"
DISPOSE_CLOSE = "dispose"
DETACHED_CLOSE = "detached"
GC_CLOSE = "gc"
OTHER_CLOSE = "other"
CLOSE_REASONS: tuple[str, ...] = (
    OVERFLOW_CLOSE,
    RECYCLE_CLOSE,
    INVALIDATED_CLOSE,
    RESET_FAILED_CLOSE,
    DISPOSE_CLOSE,
    DETACHED_CLOSE,
    GC_CLOSE,
    OTHER_CLOSE,
)
CLOSES = Metric(
    "sqlalchemy_pool_closes",
    "counter",
    "DBAPI connections closed, by reason: overflow (returned to a pool with no room for it), "
    "recycle (older than pool_recycle), invalidated, reset_failed (the reset on return "
    "raised), dispose, detached (a detached connection closed), gc (the garbage collector "
    "closed one the application dropped) or other.",
    ("reason",),
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
    "The instrumented pool: its class, dialect and driver, and its settings: pre_ping, "
    "reset_on_return, use_lifo (queue pools) and isolation_level (once known).",
    ("pool_class", "dialect", "driver", "pre_ping", "reset_on_return", "use_lifo",
     "isolation_level"),
)  # fmt: skip
# The isolation levels SQLAlchemy's dialects name: the `isolation_level` label takes one of
# these (a multiprocess worker stores its index, 1-based; 0 is not known).
ISOLATION_LEVELS: tuple[str, ...] = (
    "AUTOCOMMIT",
    "READ UNCOMMITTED",
    "READ COMMITTED",
    "REPEATABLE READ",
    "SERIALIZABLE",
    "SNAPSHOT",
)
RECYCLE = Metric(
    "sqlalchemy_pool_recycle_seconds",
    "gauge",
    "Configured pool_recycle: a connection older than this is replaced at its next checkout. "
    "No series where it is not set.",
)
HOOK_ERRORS = Metric(
    "pool_exporter_hook_errors",
    "counter",
    "Exceptions raised inside pool-exporter's own hooks, swallowed so the application goes on.",
    ("hook",),
)

# -- long checkouts and leaked connections -----------------------------------------------------

OLDEST_CHECKOUT = Metric(
    "sqlalchemy_pool_oldest_checkout_seconds",
    "gauge",
    "Age of the connection checked out longest and not yet returned; 0 when none is out.",
)
LONG_CHECKOUTS = Metric(
    "sqlalchemy_pool_long_checkouts",
    "counter",
    "Checkouts held past instrument()'s long_checkout_threshold (counted once each).",
)
GC_RETURNED = Metric(
    "sqlalchemy_pool_gc_returned_connections",
    "counter",
    "Checked-out connections the garbage collector returned: the application never closed them.",
)

# -- who holds the connections: instrument(engine, route=...) ---------------------------------

# The route under which every checkout beyond the busiest `max_routes` routes is counted. Never
# the name of a series of its own: a route() that really returns it is counted here too.
OTHER_ROUTES = "(other)"
# The route of a checkout whose route() returned None, or failed (counted as a hook error).
NO_ROUTE = "(none)"
ROUTE_CHECKOUTS = Metric(
    "sqlalchemy_pool_route_checkouts",
    "counter",
    "Successful checkouts by the route current at checkout (instrument()'s route=; the "
    f"busiest by connection-seconds, the rest as {OTHER_ROUTES}).",
    ("route",),
)
ROUTE_HOLD = Metric(
    "sqlalchemy_pool_route_hold_seconds",
    "counter",
    "Connection-seconds held by the route current at checkout, counted when each connection "
    f"comes back (the busiest routes, the rest as {OTHER_ROUTES}).",
    ("route",),
)
ROUTE_WAITED = Metric(
    "sqlalchemy_pool_route_waited_checkouts",
    "counter",
    "Successful checkouts that found no idle connection, by the route current at checkout "
    f"(the busiest routes, the rest as {OTHER_ROUTES}).",
    ("route",),
)
ROUTES: tuple[Metric, ...] = (ROUTE_CHECKOUTS, ROUTE_HOLD, ROUTE_WAITED)

ALL: tuple[Metric, ...] = (
    CONNECTIONS,
    OVERFLOW,
    SIZE,
    MAX_OVERFLOW,
    MAX_CONNECTIONS,
    TIMEOUT,
    RECYCLE,
    WAITING,
    OPENING,
    CHECKOUT_WAIT,
    CHECKOUTS,
    WAITED_CHECKOUTS,
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
    OLDEST_CHECKOUT,
    LONG_CHECKOUTS,
    GC_RETURNED,
    *ROUTES,
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
    "fork",  # resetting the numbers in a forked child
    "long_checkout",
    "store",  # writing the multiprocess stats file (a full filesystem, say)
    "route",  # the application's route() raised or returned something other than a string
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
# -- what the database is stuck on: open transactions and connection limits --------------------

DATABASE_OLDEST_IDLE_IN_TRANSACTION = ExporterMetric(
    "pool_exporter_database_oldest_idle_in_transaction_seconds",
    "gauge",
    "How long the session idle in a transaction longest has been idle (since its last "
    "statement ended), by database and application_name (the busiest names; the rest as "
    f"{OTHER_APPLICATIONS}); 0 when none is.",
    ("database", "application_name"),
)
DATABASE_OLDEST_TRANSACTION = ExporterMetric(
    "pool_exporter_database_oldest_transaction_seconds",
    "gauge",
    "Age of the oldest open transaction, by database and application_name (the busiest "
    f"names; the rest as {OTHER_APPLICATIONS}); 0 when none is open.",
    ("database", "application_name"),
)
DATABASE_CONNECTION_LIMIT = ExporterMetric(
    "pool_exporter_database_connection_limit",
    "gauge",
    "A database's CONNECTION LIMIT (pg_database.datconnlimit), for the databases with client "
    "connections; no series for a database without a limit.",
    ("database",),
)
# The role under which the sidecar counts every role beyond its cap (--database-max-roles),
# as application_name's "(other)": never the name of a series of its own.
OTHER_ROLES = "(other)"
DATABASE_ROLE_CONNECTIONS = ExporterMetric(
    "pool_exporter_database_role_connections",
    "gauge",
    "Client connections by role (the session's login role), for the roles that log in and have "
    "connections or a CONNECTION LIMIT: those nearest their limit, then the busiest; the rest "
    f"as {OTHER_ROLES}.",
    ("role",),
)
DATABASE_ROLE_CONNECTION_LIMIT = ExporterMetric(
    "pool_exporter_database_role_connection_limit",
    "gauge",
    "A role's CONNECTION LIMIT (pg_roles.rolconnlimit), for the roles of "
    f"{DATABASE_ROLE_CONNECTIONS.name} that have one; no series for a role without a limit.",
    ("role",),
)
DATABASE_ROLES = ExporterMetric(
    "pool_exporter_database_roles",
    "gauge",
    "Roles that log in and have client connections or a CONNECTION LIMIT; beyond the sidecar's "
    f"--database-max-roles, the rest are counted as {OTHER_ROLES}.",
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
    DATABASE_OLDEST_IDLE_IN_TRANSACTION,
    DATABASE_OLDEST_TRANSACTION,
    DATABASE_CONNECTION_LIMIT,
    DATABASE_ROLE_CONNECTIONS,
    DATABASE_ROLE_CONNECTION_LIMIT,
    DATABASE_ROLES,
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


# -- PgBouncer between the pools and the database (the sidecar's --pgbouncer-url-file) --------

# Every PgBouncer series carries the name the sidecar was given for that pooler.
POOLER_LABEL = "pooler"
# The database and user under which the sidecar counts the pools beyond its cap
# (--pgbouncer-max-pools), as the database view does with application_name.
OTHER_POOLS = "(other)"


@dataclass(frozen=True)
class PoolerMetric(ExporterMetric):
    """A metric about one PgBouncer: the `pooler` label first."""

    @property
    def label_names(self) -> tuple[str, ...]:
        return (POOLER_LABEL, *self.labels)


_POOL = ("database", "user")
PGBOUNCER_UP = PoolerMetric(
    "pool_exporter_pgbouncer_up",
    "gauge",
    "1 if the pooler's admin console answered the sidecar at this scrape, 0 if not.",
)
PGBOUNCER_SCRAPE = PoolerMetric(
    "pool_exporter_pgbouncer_scrape_duration_seconds",
    "gauge",
    "Time this scrape spent connecting to and querying the pooler's admin console.",
)
PGBOUNCER_CLIENTS = PoolerMetric(
    "pool_exporter_pgbouncer_client_connections",
    "gauge",
    "Client connections of a pool (SHOW POOLS) by state: active (linked to a server "
    "connection or idle) or waiting (queued for a server connection).",
    (*_POOL, "state"),
)
PGBOUNCER_SERVERS = PoolerMetric(
    "pool_exporter_pgbouncer_server_connections",
    "gauge",
    "Server connections of a pool (SHOW POOLS) by state: active, idle, used, tested, login.",
    (*_POOL, "state"),
)
PGBOUNCER_MAXWAIT = PoolerMetric(
    "pool_exporter_pgbouncer_client_wait_max_seconds",
    "gauge",
    "How long the oldest waiting client of a pool has waited (maxwait plus maxwait_us).",
    _POOL,
)
PGBOUNCER_POOLS = PoolerMetric(
    "pool_exporter_pgbouncer_pools",
    "gauge",
    "Distinct (database, user) pools in the pooler; beyond the sidecar's "
    f"--pgbouncer-max-pools, all but the busiest are counted as {OTHER_POOLS}.",
)
PGBOUNCER_TRANSACTIONS = PoolerMetric(
    "pool_exporter_pgbouncer_transactions",
    "counter",
    "Transactions the pooler has passed to the database (SHOW STATS total_xact_count).",
    ("database",),
)
PGBOUNCER_QUERIES = PoolerMetric(
    "pool_exporter_pgbouncer_queries",
    "counter",
    "Queries the pooler has passed to the database (SHOW STATS total_query_count).",
    ("database",),
)
PGBOUNCER_CLIENT_WAIT = PoolerMetric(
    "pool_exporter_pgbouncer_client_wait_seconds",
    "counter",
    "Time clients spent waiting for a server connection (SHOW STATS total_wait_time).",
    ("database",),
)
PGBOUNCER_SERVER_TRANSACTION_TIME = PoolerMetric(
    "pool_exporter_pgbouncer_server_transaction_seconds",
    "counter",
    "Time spent in transactions (SHOW STATS total_xact_time); PgBouncer 1.18 counts a "
    "transaction from its client's first query, the client's wait for a server connection "
    f"included: less {PGBOUNCER_CLIENT_WAIT.name}, the database's time.",
    ("database",),
)
PGBOUNCER_SERVER_QUERY_TIME = PoolerMetric(
    "pool_exporter_pgbouncer_server_query_seconds",
    "counter",
    "Time server connections spent running queries (SHOW STATS total_query_time).",
    ("database",),
)
PGBOUNCER_DB_POOL_SIZE = PoolerMetric(
    "pool_exporter_pgbouncer_database_pool_size",
    "gauge",
    "Server connections one pool of this database may open (SHOW DATABASES pool_size).",
    ("database",),
)
PGBOUNCER_DB_RESERVE_POOL = PoolerMetric(
    "pool_exporter_pgbouncer_database_reserve_pool_size",
    "gauge",
    "Extra server connections a pool of this database may open when clients wait too long.",
    ("database",),
)
PGBOUNCER_DB_MAX_CONNECTIONS = PoolerMetric(
    "pool_exporter_pgbouncer_database_max_connections",
    "gauge",
    "Server connections the pooler may open to this database over all its pools "
    "(max_db_connections; 0 is no limit).",
    ("database",),
)
PGBOUNCER_DB_CURRENT_CONNECTIONS = PoolerMetric(
    "pool_exporter_pgbouncer_database_current_connections",
    "gauge",
    "Server connections open to this database now, over all its pools.",
    ("database",),
)
PGBOUNCER_DB_PAUSED = PoolerMetric(
    "pool_exporter_pgbouncer_database_paused",
    "gauge",
    "1 if the database is paused (PAUSE): clients queue until RESUME.",
    ("database",),
)
PGBOUNCER_DB_DISABLED = PoolerMetric(
    "pool_exporter_pgbouncer_database_disabled",
    "gauge",
    "1 if the database is disabled (DISABLE): new clients are refused.",
    ("database",),
)
PGBOUNCER_DB_INFO = PoolerMetric(
    "pool_exporter_pgbouncer_database",
    "info",
    "A database of the pooler and the pool mode its pools run in (its own or the default).",
    ("database", "pool_mode"),
)
PGBOUNCER_MAX_CLIENT_CONN = PoolerMetric(
    "pool_exporter_pgbouncer_max_client_connections",
    "gauge",
    "Client connections the pooler accepts in all (SHOW CONFIG max_client_conn).",
)
PGBOUNCER_DEFAULT_POOL_SIZE = PoolerMetric(
    "pool_exporter_pgbouncer_default_pool_size",
    "gauge",
    "Server connections per pool for databases that set no pool_size (default_pool_size).",
)
PGBOUNCER_CONFIG_INFO = PoolerMetric(
    "pool_exporter_pgbouncer_config",
    "info",
    "The pooler's default pool mode (SHOW CONFIG pool_mode): session pooling gives every "
    "client connection a server connection of its own.",
    ("pool_mode",),
)
PGBOUNCER_LIST_ITEMS = PoolerMetric(
    "pool_exporter_pgbouncer_list_items",
    "gauge",
    "Items of the pooler's internal lists (SHOW LISTS): used_clients, free_servers, ...",
    ("list",),
)

PGBOUNCER: tuple[Metric, ...] = (
    PGBOUNCER_UP,
    PGBOUNCER_SCRAPE,
    PGBOUNCER_CLIENTS,
    PGBOUNCER_SERVERS,
    PGBOUNCER_MAXWAIT,
    PGBOUNCER_POOLS,
    PGBOUNCER_TRANSACTIONS,
    PGBOUNCER_QUERIES,
    PGBOUNCER_CLIENT_WAIT,
    PGBOUNCER_SERVER_TRANSACTION_TIME,
    PGBOUNCER_SERVER_QUERY_TIME,
    PGBOUNCER_DB_POOL_SIZE,
    PGBOUNCER_DB_RESERVE_POOL,
    PGBOUNCER_DB_MAX_CONNECTIONS,
    PGBOUNCER_DB_CURRENT_CONNECTIONS,
    PGBOUNCER_DB_PAUSED,
    PGBOUNCER_DB_DISABLED,
    PGBOUNCER_DB_INFO,
    PGBOUNCER_MAX_CLIENT_CONN,
    PGBOUNCER_DEFAULT_POOL_SIZE,
    PGBOUNCER_CONFIG_INFO,
    PGBOUNCER_LIST_ITEMS,
)
