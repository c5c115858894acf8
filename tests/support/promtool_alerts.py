"""One promtool case per alert: the series of its trouble, and the alert not yet firing,
firing with exactly the labels and annotations written here, and resolved."""

from __future__ import annotations

from collections.abc import Callable

from pool_exporter import metrics as m

from .promtool_series import (
    INSTANCE,
    JOB,
    POOLER,
    POOLER_POOL,
    POOLER_WHERE,
    RUNBOOKS,
    SIDECAR,
    Case,
    Fn,
    Pool,
    Series,
    between,
    database,
    labels,
    one,
    pooler,
    stuck,
)

# -- one case per alert: not yet, firing with exact labels and annotations, resolved ----------


def pool_case(pool: Pool, seconds: int, interval: int = 15) -> Callable[[], Series]:
    def build() -> Series:
        s = Series(interval, seconds // interval + 1)
        pool.add(s)
        database(s, lambda k: 50.0)
        return s

    return build


STEADY = 10.5  # 70 % of 15
WORKER = labels(**{m.WORKER_LABEL: "0"})
WHERE = "pool main on web-1:8000 (worker 0)"


def queued(waiting: float) -> Callable[[], Series]:
    """The pool full with `waiting` callers from 300 s to 600 s, at 70 % before and after."""
    return pool_case(
        Pool(in_use=between(300, 600, 15, STEADY), waiting=between(300, 600, waiting, 0)), 900
    )


def connect_errors() -> Series:
    """10 connections opened per interval; from 300 s to 600 s none, and 30 attempts fail."""
    s = Series(15, 1201 // 15 + 1)
    failing = between(300, 615, 30.0, 0.0)
    Pool(
        in_use=lambda k: STEADY,
        connects=lambda k: 0.0 if failing(k) else 10.0,
        connect_errors=lambda k: failing(k) or 0.0,
    ).add(s)
    return s


def invalidations() -> Series:
    """Two workers of 15: 18 invalidations at 600 s are 60 % of the instance's 30."""
    s = Series(15, 81)
    Pool(
        in_use=lambda k: STEADY,
        workers=("0", "1"),
        invalidations=lambda k: 18.0 if k * 15 == 600 else 0.0,
    ).add(s)
    return s


def fleet() -> Series:
    """Four workers of 15 (60 of the database's 100), eight from 300 s to 1500 s (120)."""
    s = Series(15, 1801 // 15 + 1)
    Pool(in_use=lambda k: STEADY, workers=("0", "1", "2", "3")).add(s)
    for slot in ("4", "5", "6", "7"):
        worker = labels(**{m.WORKER_LABEL: slot})
        s.gauge(m.MAX_CONNECTIONS.name, worker, between(300, 1500, 15.0, None))
    database(s, lambda k: 50.0)
    return s


def database_busy() -> Series:
    """97 of the 100 slots in use from 300 s to 900 s."""
    s = Series(15, 1201 // 15 + 1)
    Pool(in_use=lambda k: STEADY).add(s)
    database(s, between(300, 900, 97.0, 50.0))
    return s


def database_down() -> Series:
    s = Series(15, 601 // 15 + 1)
    Pool(in_use=lambda k: STEADY).add(s)
    database(s, lambda k: 50.0, up=between(300, 450, 0.0, 1.0))
    return s


def metrics_absent() -> Series:
    """web-1 keeps answering scrapes without pool metrics from 300 s to 1500 s; web-2 is
    removed from service discovery at 300 s and must stay quiet."""
    s = Series(15, 1801 // 15 + 1)
    info_labels = labels(pool_class="QueuePool", dialect="sqlite", driver="pysqlite")
    s.gauge(m.INFO.sample, info_labels, between(300, 1500, None, 1.0))
    s.gauge("up", {"job": JOB, "instance": INSTANCE}, one)
    s.gauge(m.INFO.sample, {**info_labels, "instance": "web-2:8000"}, between(0, 300, 1.0, None))
    s.gauge("up", {"job": JOB, "instance": "web-2:8000"}, between(0, 300, 1.0, None))
    return s


def stuck_case(
    *,
    used: Fn = lambda k: 50.0,
    idle: Fn = lambda k: 0.5,
    role_connections: Fn = lambda k: 20.0,
) -> Callable[[], Series]:
    """A steady pool, `used` of the database's slots, a session idle in a transaction for
    `idle` seconds and role web's `role_connections` (promtool_series.stuck)."""

    def build() -> Series:
        s = Series(15, 1201 // 15 + 1)
        Pool(in_use=lambda k: STEADY).add(s)
        database(s, used)
        stuck(s, idle=idle, role_connections=role_connections)
        return s

    return build


def idle_from(start: int, end: int) -> Fn:
    """The longest idle-in-transaction session's age: one left idle from `start` to `end`
    seconds, sessions idle for half a second otherwise."""
    return lambda k: float(k * 15 - start) if start <= k * 15 < end else 0.5


def pooler_queue(maxwait: float) -> Callable[[], Series]:
    """From 300 s to 600 s every server connection of the pool busy and 5 clients waiting,
    the oldest for `maxwait` seconds."""

    def build() -> Series:
        s = Series(15, 901 // 15 + 1)
        Pool(in_use=lambda k: STEADY).add(s)
        pooler(
            s,
            waiting=between(300, 600, 5.0, 0.0),
            maxwait=between(300, 600, maxwait, 0.0),
            active=between(300, 600, 20.0, 8.0),
        )
        return s

    return build


def pooler_clients() -> Series:
    """95 of the pooler's 100 client connections in use from 300 s to 900 s."""
    s = Series(15, 1201 // 15 + 1)
    Pool(in_use=lambda k: STEADY).add(s)
    pooler(s, used_clients=between(300, 900, 95.0, 30.0))
    return s


def pooler_fleet(pool_mode: str) -> Callable[[], Series]:
    """The fleet of fleet() (60 possible connections, 120 from 300 s to 1500 s) behind one
    pooler accepting 100 clients, in `pool_mode`."""

    def build() -> Series:
        s = fleet()
        pooler(s, pool_mode=pool_mode)
        return s

    return build


def held_from(start: int, end: int) -> Fn:
    """The oldest checkout's age: one connection out from `start` to `end` seconds."""
    return lambda k: float(k * 15 - start) if start <= k * 15 < end else 0.02


def once_at(seconds: int) -> Callable[[int], float]:
    """A counter that goes up by one at `seconds`."""
    return lambda k: 1.0 if k * 15 == seconds else 0.0


DB = {"job": JOB}
CASES = [
    Case(
        "SQLAlchemyPoolNearlyFull",
        pool_case(Pool(in_use=between(300, 600, 13.5, STEADY)), 900),
        severity="warning",
        summary="A connection pool is nearly full.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolnearlyfull",
        before=405,
        firing=420,
        labels=WORKER,
        description=f"{WHERE} has had 90% of its connections in use for 2m: the next burst "
        "will make callers wait.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolExhausted",
        queued(200),
        severity="warning",
        summary="A connection pool is exhausted: callers are queueing for a connection.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolexhausted",
        before=285,
        firing=300,
        labels=WORKER,
        description=f"{WHERE} is full and the callers queued for a connection need about 2s "
        "to be served at the recent hold time.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolCallersWaiting",
        queued(3),
        severity="warning",
        summary="Callers have been waiting for a full connection pool.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolcallerswaiting",
        before=345,
        firing=360,
        labels=WORKER,
        description=f"{WHERE} has been at capacity with callers waiting for 1m; 3 are waiting now.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolQueueExceedsTimeout",
        # 3,600 callers at 0.15 s holds on 15 connections: 36 s of queue; pages at once
        queued(3600),
        severity="critical",
        summary="Callers queued for a connection pool are about to hit the pool timeout.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolqueueexceedstimeout",
        before=285,
        firing=300,
        labels=WORKER,
        description=f"{WHERE} is full and its queue needs 120% of the pool timeout to drain: "
        "its last callers will fail with TimeoutError.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolQueueNearTimeout",
        queued(2400),
        severity="critical",
        summary="Callers queued for a connection pool will soon hit the pool timeout.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolqueueneartimeout",
        before=300,
        firing=315,
        labels=WORKER,
        description=f"{WHERE} is full and its queue needs 80% of the pool timeout to drain: "
        "checkouts will fail with TimeoutError unless load drops.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolCheckoutWaitNearTimeout",
        # from 300 s every checkout served waited 17.5 s, and callers keep waiting
        pool_case(
            Pool(
                in_use=between(300, 600, 15, STEADY),
                waiting=between(300, 600, 500, 0),
                wait=lambda k: 17.5 if 300 <= k * 15 < 600 else 0.001,
            ),
            900,
        ),
        severity="critical",
        summary="Checkouts wait a large share of the pool timeout.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolcheckoutwaitneartimeout",
        before=300,
        firing=315,
        labels=labels(),
        # p99 of 2 fast and 2 slow intervals: 15 + 5 * (0.99 * 4 - 2) / 2 = 19.9 s of 30
        description="pool main on web-1:8000: the 99th percentile wait for a connection over "
        "1m (timed-out callers included) was 66.33% of the pool timeout and callers are still "
        "waiting.",
        resolved=600,
    ),
    Case(
        "SQLAlchemyPoolCheckoutTimeouts",
        pool_case(Pool(in_use=lambda k: 15, timeouts=lambda k: 60 if k * 15 == 300 else 0), 600),
        severity="critical",
        summary="Checkouts are failing with the pool's TimeoutError.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolcheckouttimeouts",
        before=285,
        firing=300,
        labels=labels(),
        description="pool main on web-1:8000: 1 checkouts/s timed out over the last 1m; the "
        "application is returning errors.",
        resolved=360,
    ),
    Case(
        "SQLAlchemyPoolHeadroomLow",
        # two minutes at capacity; the busiest 1m average reaches 100 % at the second sample
        pool_case(Pool(in_use=between(300, 420, 15, STEADY, 60)), 7 * 3600, interval=60),
        severity="info",
        summary="A connection pool has little headroom for the next burst.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolheadroomlow",
        before=300,
        firing=360,
        labels=labels(),
        description="pool main on web-1:8000: its busiest 1m in the last 6h averaged 100% of "
        "capacity. Raise the pool (or the workers) before the next push.",
        resolved=420 + 6 * 3600 + 60,
    ),
    Case(
        "SQLAlchemyPoolConnectErrors",
        connect_errors,
        severity="warning",
        summary="A connection pool cannot open database connections.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolconnecterrors",
        before=345,  # pending since 300 s
        firing=360,
        labels=labels(),
        description="pool main on web-1:8000: 50% of the attempts to open a connection failed "
        "over the last 5m.",
        resolved=900,
    ),
    Case(
        "SQLAlchemyPoolOverflowChurn",
        # 30 overflow connections closed every 15 s (2/s) from 300 s to 1500 s: above 0.5/s
        # over 5m from 375 s (0.5 at 360 s), so the 10m `for` runs out at 975 s
        pool_case(
            Pool(in_use=lambda k: STEADY, overflow_closes=between(300, 1500, 30.0, 0.0)), 2100
        ),
        severity="warning",
        summary="A connection pool keeps opening and discarding overflow connections.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypooloverflowchurn",
        before=960,
        firing=975,
        labels=labels(),
        description="pool main on web-1:8000 has closed 2 overflow connections/s over the "
        "last 5m for 10m: each was opened beyond pool_size and closed when it came back to a "
        "full pool, a new database connection every time.",
        resolved=1800,
    ),
    Case(
        "SQLAlchemyPoolInvalidationStorm",
        invalidations,
        severity="warning",
        summary="A connection pool is invalidating many connections.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolinvalidationstorm",
        before=585,
        firing=600,
        labels=labels(),
        description="pool main on web-1:8000: connections amounting to 60% of the pool's "
        "capacity were invalidated over the last 5m (database restart, failover or network "
        "trouble).",
        resolved=915,
    ),
    Case(
        "SQLAlchemyFleetExceedsDatabaseLimit",
        fleet,
        severity="warning",
        summary="The pools together may open more connections than the database allows.",
        runbook_url=f"{RUNBOOKS}#sqlalchemyfleetexceedsdatabaselimit",
        before=1185,
        firing=1200,
        labels=DB,
        description="The pools of app may open 120% of the connections the database allows "
        "ordinary roles (max_connections minus reserved): under load, new connections will "
        "be refused.",
        resolved=1500,
    ),
    Case(
        "PgBouncerPoolSaturated",
        pooler_queue(3.0),
        severity="warning",
        summary="Clients are queueing in the pooler for a server connection.",
        runbook_url=f"{RUNBOOKS}#pgbouncerpoolsaturated",
        before=300,
        firing=315,
        labels=POOLER_POOL,
        description=f"{POOLER_WHERE} has every one of its server connections in use and its "
        "oldest waiting client has waited 3s: the pooler's pool size, not the applications' "
        "pools, is what limits this database now.",
        resolved=600,
    ),
    Case(
        "PgBouncerWaitNearPoolTimeout",
        pooler_queue(20.0),
        severity="critical",
        summary="Clients wait in the pooler for a large share of the applications' pool timeout.",
        runbook_url=f"{RUNBOOKS}#pgbouncerwaitnearpooltimeout",
        before=300,
        firing=315,
        labels={"job": JOB, "pooler": "edge", "database": "shop", "user": "web"},
        description=f"The oldest client of {POOLER_WHERE} has waited 66.67% of the "
        "applications' pool timeout: each holds an application connection while it waits, "
        "so callers queued behind it in the pools will hit TimeoutError.",
        resolved=600,
    ),
    Case(
        "PgBouncerClientConnectionsNearLimit",
        pooler_clients,
        severity="warning",
        summary="The pooler is running out of client connections.",
        runbook_url=f"{RUNBOOKS}#pgbouncerclientconnectionsnearlimit",
        before=405,
        firing=420,
        labels=POOLER,
        description="Pooler edge on web-1:9187 has 95% of max_client_conn in use: past it, "
        "new connections from the pools are refused.",
        resolved=900,
    ),
    Case(
        "PgBouncerFleetExceedsMaxClientConn",
        pooler_fleet("transaction"),
        severity="warning",
        summary="The pools together may open more connections than the poolers accept.",
        runbook_url=f"{RUNBOOKS}#pgbouncerfleetexceedsmaxclientconn",
        before=1185,
        firing=1200,
        labels=DB,
        description="The pools of app may open 120% of the client connections their poolers "
        "accept (max_client_conn): under load, new connections will be refused.",
        resolved=1500,
    ),
    Case(
        "PgBouncerSessionModeFleetExceedsDatabase",
        pooler_fleet("session"),
        severity="warning",
        summary="A pooler in session mode does not protect the database from the fleet.",
        runbook_url=f"{RUNBOOKS}#pgbouncersessionmodefleetexceedsdatabase",
        before=1185,
        firing=1200,
        labels=DB,
        description="The pools of app may open 120% of the connections the database allows "
        "ordinary roles, and their pooler runs in session mode, which gives every client "
        "connection a server connection of its own.",
        resolved=1500,
    ),
    Case(
        "PoolExporterDatabaseConnectionsNearLimit",
        database_busy,
        severity="warning",
        summary="The database is running out of connection slots.",
        runbook_url=f"{RUNBOOKS}#poolexporterdatabaseconnectionsnearlimit",
        before=585,
        firing=600,
        labels=DB,
        description="The database of app has 97% of the connection slots for ordinary roles "
        "in use.",
        resolved=900,
    ),
    Case(
        "PoolExporterDatabaseConnectionsExhausted",
        database_busy,
        severity="critical",
        summary="The database is out of connection slots.",
        runbook_url=f"{RUNBOOKS}#poolexporterdatabaseconnectionsexhausted",
        before=345,
        firing=360,
        labels=DB,
        description="The database of app has 97% of the connection slots for ordinary roles "
        "in use: new connections are being refused.",
        resolved=900,
    ),
    Case(
        "PoolExporterDatabaseDown",
        database_down,
        severity="warning",
        summary="The sidecar cannot query the database.",
        runbook_url=f"{RUNBOOKS}#poolexporterdatabasedown",
        before=405,
        firing=420,
        labels={"job": JOB, "instance": SIDECAR},
        description="The sidecar web-1:9187 of app has not been able to query the database for 2m.",
        resolved=450,
    ),
    Case(
        "SQLAlchemyPoolMetricsAbsent",
        metrics_absent,
        severity="warning",
        summary="Pool metrics have disappeared.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolmetricsabsent",
        before=885,
        firing=900,
        labels={"job": JOB, "instance": INSTANCE},
        description="web-1:8000 of app reported connection pool metrics in the last 1h and "
        "has reported none for 10m: the pools are not watched.",
        resolved=1500,
    ),
    Case(
        "SQLAlchemyPoolCheckoutHeldPastTimeout",
        # one connection out from 300 s to 900 s: past the 30 s pool timeout at 345 s
        pool_case(Pool(in_use=lambda k: STEADY, oldest=held_from(300, 900)), 1200),
        severity="warning",
        summary="A connection has been checked out for longer than the pool timeout.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolcheckoutheldpasttimeout",
        before=450,
        firing=465,
        labels=WORKER,
        description=f"{WHERE} has had a connection checked out for 2m 45s, longer than the "
        "pool timeout, for 2m: a leaked session, a transaction left open, or a slow query.",
        resolved=915,
    ),
    Case(
        "SQLAlchemyPoolLongCheckouts",
        pool_case(Pool(in_use=lambda k: STEADY, long_checkouts=once_at(300)), 900),
        severity="info",
        summary="Connections were held past the application's long_checkout_threshold.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoollongcheckouts",
        before=285,
        firing=300,
        labels=labels(),
        description="pool main on web-1:8000: connections were held past "
        "long_checkout_threshold in the last 5m; the application's log names where each was "
        "borrowed.",
        resolved=615,
    ),
    Case(
        "SQLAlchemyPoolConnectionsLeaked",
        pool_case(Pool(in_use=lambda k: STEADY, gc_returned=once_at(300)), 900),
        severity="info",
        summary="The garbage collector returned connections the application never closed.",
        runbook_url=f"{RUNBOOKS}#sqlalchemypoolconnectionsleaked",
        before=285,
        firing=300,
        labels=labels(),
        description="pool main on web-1:8000: the garbage collector returned connections the "
        "application never closed in the last 5m; the application's log names where they were "
        "borrowed when long_checkout_threshold is set.",
        resolved=615,
    ),
]
CASES += [
    Case(
        "PoolExporterSessionIdleInTransaction",
        # idle in its transaction from 300 s: past 60 s at 360 s, and 1m later it fires
        stuck_case(idle=idle_from(300, 900)),
        severity="warning",
        summary="A database session has been left idle in a transaction.",
        runbook_url=f"{RUNBOOKS}#poolexportersessionidleintransaction",
        before=405,
        firing=420,
        labels={**DB, "database": "shop", "application_name": "web"},
        description="A session of web on database shop of app has been idle in a transaction "
        "for 2m 0s: it keeps its locks, keeps vacuum from removing the rows its snapshot can "
        "see, and holds a connection of its pool.",
        resolved=900,
    ),
    Case(
        "PoolExporterRoleNearConnectionLimit",
        # role web holds 45 of its 50 from 300 s to 900 s
        stuck_case(role_connections=between(300, 900, 45.0, 20.0)),
        severity="warning",
        summary="A database role is near its own connection limit.",
        runbook_url=f"{RUNBOOKS}#poolexporterrolenearconnectionlimit",
        before=585,
        firing=600,
        labels={**DB, "role": "web"},
        description="Role web on the database of app holds 90% of its CONNECTION LIMIT: past "
        "it, its new connections are refused (too many connections for role), whatever "
        "max_connections allows.",
        resolved=900,
    ),
    Case(
        "PoolExporterDatabaseNearConnectionLimit",
        # database shop holds 85 of its 100 from 300 s to 900 s
        stuck_case(used=between(300, 900, 85.0, 50.0)),
        severity="warning",
        summary="A database is near its own connection limit.",
        runbook_url=f"{RUNBOOKS}#poolexporterdatabasenearconnectionlimit",
        before=585,
        firing=600,
        labels={**DB, "database": "shop"},
        description="Database shop of app holds 85% of its CONNECTION LIMIT: past it, new "
        "connections to it are refused, whatever max_connections allows.",
        resolved=900,
    ),
]
CASE = {case.alert: case for case in CASES}
