"""The pool dashboard, from one config; `pool-exporter dashboards`. Its rows of panels, its
variables and annotations; the Grafana side (grafanalib's output brought to schema 39) is in
grafana.py, the PromQL in promql.py, the same builder the rules use.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from grafanalib import core as g

from pool_exporter import metrics as m

from .config import MixinConfig
from .grafana import (
    DATASOURCE,
    GRAFANA_DATASOURCE,
    SCHEMA_VERSION,
    Query,
    Row,
    datasource_variable,
    heatmap,
    layout,
    override,
    query_variable,
    render,
    stat,
    steps,
    timeseries,
    to_json_data,
)
from .promql import WORKER, Builder

# The pages are about the queue, which only forms at capacity: the red band starts where
# callers wait.
UTILISATION_CRITICAL = 1.0
CLUSTER_VARIABLE = "cluster"
WORKER_MATCHER = f'{WORKER}=~"$worker"'
JOB, INSTANCE, POOL = 'job=~"$job"', 'instance=~"$instance"', 'pool=~"$pool"'
WINDOW = "$__rate_interval"  # Grafana's: at least four scrape intervals
# What a panel of the database or the fleet groups by: nothing but the cluster, the total of
# the jobs chosen (the rules group by each fleet).
TOTAL: tuple[str, ...] = ()


def cluster_matchers(cfg: MixinConfig) -> tuple[str, ...]:
    """The cluster variable's matcher, when the config names a cluster label."""
    return (f'{cfg.cluster_label}=~"${CLUSTER_VARIABLE}"',) if cfg.cluster_label else ()


def builder(cfg: MixinConfig) -> Builder:
    """The rules' builder with the dashboard's variables as matchers: the cluster (when there
    is a cluster label) and the job narrow everything; instance and pool the pool series."""
    fleet = (*cluster_matchers(cfg), JOB)
    return Builder(cfg, pool_scope=(*fleet, INSTANCE, POOL), fleet_scope=fleet)


def _quantiles(metric: m.Metric, b: Builder, *, exemplar: bool = False) -> list[Query]:
    """p50, p95 and p99 of a histogram per pool; with `exemplar`, the p99 query also asks for
    the histogram's exemplars (once is enough: they are the same for the three)."""
    rate = b.rate(metric, WINDOW, "_bucket")
    return [
        Query(
            f"histogram_quantile({q}, {b.agg('sum', rate, 'le', 'pool')})",
            f"p{round(q * 100)} {{{{pool}}}}",
            exemplar=exemplar and q == 0.99,
        )
        for q in (0.5, 0.95, 0.99)
    ]


def per_pool(b: Builder, metric: m.Metric, *by: str) -> str:
    """A counter per second, summed by pool (and `by`) over the chosen instances."""
    return b.agg("sum", b.rate(metric, WINDOW), "pool", *by)


def gauge(b: Builder, metric: m.Metric, *matchers: str) -> str:
    """A per-worker gauge, narrowed to the chosen workers."""
    return b.pool(metric, WORKER_MATCHER, *matchers)


WORKER_LEGEND = "{{pool}} {{instance}} {{" + WORKER + "}}"
PER_WORKER = ("job", "instance", "pool", WORKER)


# -- the panels -----------------------------------------------------------------------------


def saturation(b: Builder) -> Row:
    cfg = b.cfg
    in_use = gauge(b, m.CONNECTIONS, 'state="in_use"')
    idle = gauge(b, m.CONNECTIONS, 'state="idle"')
    utilisation = timeseries(
        "Pool utilisation per worker",
        "Connections in use / the pool's max connections, one line per pool and worker: a "
        "line in the red band is a worker whose callers are about to wait; the bands are the "
        "alert thresholds.",
        "percentunit",
        [
            # the rules' own definition (pool:sqlalchemy_pool_utilisation:ratio)
            Query(b.utilisation(WORKER_MATCHER), WORKER_LEGEND)
        ],
        bands=steps(cfg.utilisation_warning, UTILISATION_CRITICAL),
        threshold_style="line+area",
        max_value=1,
    )
    capacity = timeseries(
        "In use vs capacity",
        "Connections in use and idle (stacked) against pool_size and pool_size + max_overflow "
        "(dashed), summed over the chosen workers: in use above pool_size is overflow.",
        "short",
        [
            Query(b.agg("sum", in_use, "pool"), "in use {{pool}}"),
            Query(b.agg("sum", idle, "pool"), "idle {{pool}}"),
            Query(b.agg("sum", gauge(b, m.OVERFLOW), "pool"), "overflow {{pool}}"),
            Query(b.agg("sum", gauge(b, m.SIZE), "pool"), "pool_size {{pool}}"),
            Query(b.agg("sum", gauge(b, m.MAX_CONNECTIONS), "pool"), "capacity {{pool}}"),
        ],
        stacked=True,
        overrides=[
            override("^overflow .*", "orange", dashed=True),
            override("^pool_size .*", "blue", dashed=True),
            override("^capacity .*", "red", dashed=True),
        ],
    )
    waiting = timeseries(
        "Callers waiting for a connection",
        "Callers inside the pool's checkout right now, per pool and worker: anything above 0 "
        "for more than a moment means the pool is exhausted in that worker.",
        "short",
        [Query(b.agg("max", gauge(b, m.WAITING), *PER_WORKER), WORKER_LEGEND)],
        bands=steps(1),
        threshold_style="line",
    )
    return "Saturation", [(utilisation, 12, 9), (capacity, 12, 9), (waiting, 24, 7)]


def latency(b: Builder) -> Row:
    # The wait panels sum the outcomes: the timed-out and cancelled callers waited too, and
    # theirs are the longest waits when the pool runs dry.
    wait_map = heatmap(
        "Checkout wait (heatmap)",
        "How many callers waited how long for a connection per interval, timed-out and "
        "cancelled ones included: a band rising toward the pool timeout is a pool running dry.",
        Query(
            b.agg("sum", b.increase(m.CHECKOUT_WAIT, WINDOW, "_bucket"), "le"),
            "{{le}}",
            heatmap=True,
            exemplar=True,  # the traces of checkouts that waited (docs/opentelemetry.md)
        ),
    )
    wait = timeseries(
        "Checkout wait p50 / p95 / p99 vs pool timeout",
        "Percentiles of every caller's wait for a connection, timed-out ones included, against "
        "the pool timeout (red dashed): p99 on the line means 1 % of callers or more get "
        "TimeoutError.",
        "s",
        [
            *_quantiles(m.CHECKOUT_WAIT, b, exemplar=True),
            Query(b.agg("max", gauge(b, m.TIMEOUT), "pool"), "timeout {{pool}}"),
        ],
        overrides=[override("^timeout .*", "red", dashed=True)],
    )
    hold = timeseries(
        "Connection hold time p50 / p95 / p99",
        "How long the application keeps a connection, checkout to checkin: a rising hold time "
        "with steady traffic fills the pool (Little's law: in use = checkouts/s x hold).",
        "s",
        _quantiles(m.HOLD, b, exemplar=True),  # the traces of long holds
    )
    checkouts = timeseries(
        "Checkouts per second",
        "Successful checkouts per second per pool, the demand the pool serves, and those that "
        "found no idle connection (waited for one to come back or to be opened).",
        "ops",
        [
            Query(per_pool(b, m.CHECKOUTS), "{{pool}}"),
            Query(per_pool(b, m.WAITED_CHECKOUTS), "waited {{pool}}"),
        ],
        overrides=[override("^waited .*", "orange")],
    )
    return "Latency", [(wait_map, 12, 9), (wait, 12, 9), (hold, 12, 8), (checkouts, 12, 8)]


def errors(b: Builder) -> Row:
    timeouts = timeseries(
        "Checkout timeouts and failures",
        "Checkouts per second that raised the pool's TimeoutError, were cancelled, or failed "
        "otherwise: every timeout is a request that failed for want of a connection.",
        "ops",
        [
            Query(per_pool(b, m.CHECKOUT_TIMEOUTS), "timeouts {{pool}}"),
            Query(per_pool(b, m.CHECKOUT_CANCELLATIONS), "cancelled {{pool}}"),
            Query(per_pool(b, m.CHECKOUT_ERRORS), "errors {{pool}}"),
        ],
        bands=steps(None, 0.001),
        threshold_style="line",
    )
    connect_errors = timeseries(
        "Connect errors",
        "Failed attempts per second to open a database connection: the database refused "
        "(often: too many connections) or could not be reached.",
        "ops",
        [Query(per_pool(b, m.CONNECT_ERRORS), "{{pool}}")],
    )
    invalidations = timeseries(
        "Invalidations",
        "Connections invalidated per second (soft: replaced at the next checkout); a burst "
        "usually follows a database restart or failover.",
        "ops",
        [Query(per_pool(b, m.INVALIDATIONS, "soft"), "{{pool}} soft={{soft}}")],
    )
    hooks = timeseries(
        "Exporter hook errors",
        "Exceptions inside pool-exporter's own hooks, swallowed so the application goes on: "
        "anything but 0 means the pool metrics may be off; see the application log.",
        "ops",
        [Query(per_pool(b, m.HOOK_ERRORS, "hook"), "{{pool}} {{hook}}")],
    )
    return "Errors", [(p, 6, 8) for p in (timeouts, connect_errors, invalidations, hooks)]


def churn(b: Builder) -> Row:
    new = timeseries(
        "Connections opened and closed by reason",
        "Connections opened per second, and closed per second by why (overflow: returned to "
        "a full pool; recycle; invalidated; reset_failed; dispose; detached; gc): steady "
        "overflow closes under steady traffic mean pool_size is below the load.",
        "ops",
        [
            Query(per_pool(b, m.CONNECTS), "opened {{pool}}"),
            Query(per_pool(b, m.CLOSES, "reason"), "closed {{reason}} {{pool}}"),
            Query(per_pool(b, m.DETACHES), "detached {{pool}}"),
        ],
        overrides=[override("^closed overflow .*", "orange")],
    )
    opening = timeseries(
        "Connections being opened now",
        "Connections whose driver connect() has not returned yet, per pool and worker: a "
        "database slow to accept, or refusing, shows here before the connect errors do.",
        "short",
        [Query(b.agg("max", gauge(b, m.OPENING), *PER_WORKER), WORKER_LEGEND)],
    )
    connect = timeseries(
        "Connect latency p50 / p95 / p99",
        "Time to open a new database connection: each new connection costs a caller this much.",
        "s",
        _quantiles(m.CONNECT_TIME, b),
    )
    return "Churn", [(new, 10, 8), (opening, 7, 8), (connect, 7, 8)]


def holders(b: Builder) -> Row:
    """Who holds the connections: instrument(engine, route=...)'s counts by route."""
    seconds = timeseries(
        "Connection-seconds by route",
        "Connections held per second of time by the route current at checkout (instrument()'s "
        "route=), stacked: the average number of connections each route keeps out. The "
        "busiest routes have their own series, the rest are (other).",
        "short",
        [Query(per_pool(b, m.ROUTE_HOLD, "route"), "{{route}} {{pool}}")],
        stacked=True,
    )
    checkouts = timeseries(
        "Checkouts and waited checkouts by route",
        "Checkouts per second by route, and those that found no idle connection: which routes "
        "wait when the pool runs dry.",
        "ops",
        [
            Query(per_pool(b, m.ROUTE_CHECKOUTS, "route"), "{{route}} {{pool}}"),
            Query(per_pool(b, m.ROUTE_WAITED, "route"), "waited {{route}} {{pool}}"),
        ],
        overrides=[override("^waited .*", "orange", dashed=True)],
    )
    return "Who holds the connections", [(seconds, 12, 8), (checkouts, 12, 8)]


def database_and_fleet(b: Builder) -> Row:
    max_conn = b.database_setting(m.DATABASE_MAX_CONNECTIONS, by=TOTAL)
    available = f"({b.database_available(by=TOTAL)})"
    by_state = timeseries(
        "Database connections by state and application",
        "Client connections open on the database (stacked, by state and application_name, "
        "every client not only these pools) against max_connections and the slots left to "
        "ordinary roles (dashed): the stack touching the line means new connections fail.",
        "short",
        [
            Query(
                b.database_connections("database", "state", "application_name", by=TOTAL),
                "{{application_name}} {{state}} ({{database}})",
            ),
            Query(max_conn, "max_connections"),
            Query(available, "available to applications"),
        ],
        stacked=True,
        overrides=[
            override("^max_connections$", "red", dashed=True),
            override("^available to applications$", "orange", dashed=True),
        ],
    )
    capacity = timeseries(
        "Fleet's possible connections vs the database",
        "What every pool of every worker may open at once (sum of pool_size + max_overflow) "
        "and has open now, against the database's max_connections: a fleet that can open more "
        "than the database accepts fails under load, whatever each pool's own utilisation.",
        "short",
        [
            Query(b.fleet_capacity(by=TOTAL), "fleet can open"),
            Query(b.agg("sum", b.fleet_pool(m.CONNECTIONS)), "fleet has open"),
            Query(max_conn, "max_connections"),
            Query(available, "available to applications"),
        ],
        overrides=[
            override("^max_connections$", "red", dashed=True),
            override("^available to applications$", "orange", dashed=True),
        ],
    )
    share = timeseries(
        "Fleet's share of the database",
        "The fleet's possible connections / the database's slots for applications: above 1 the "
        "pools together may ask for more connections than the database can give; the band is "
        "the alert threshold.",
        "percentunit",
        # the rules' own definitions (the fleet's records and their ratio)
        [Query(f"{b.fleet_capacity()} / ({b.database_available()})", fleet_legend(b))],
        bands=steps(b.cfg.fleet_share),
        threshold_style="line+area",
    )
    up = stat(
        "Database reachable",
        "Whether every sidecar's last query of the database succeeded (0: one could not).",
        "bool_yes_no",
        Query(b.agg("min", b.database(m.DATABASE_UP)), "up"),
        [{"color": "red", "value": None}, {"color": "green", "value": 1}],
    )
    return "Database and fleet", [(by_state, 12, 9), (capacity, 12, 9), (share, 18, 7), (up, 6, 7)]


def stuck(b: Builder) -> Row:
    """What the database is stuck on: transactions left open, and the limits of roles and
    databases that refuse connections before max_connections does."""
    cfg = b.cfg
    per_application = ("database", "application_name")
    ages = timeseries(
        "Oldest transaction and idle-in-transaction session",
        "Per application_name and database: how long the session idle in a transaction longest "
        "has been idle, and the age of the oldest open transaction; the band is where the "
        "idle-in-transaction alert fires. An idle one keeps its locks and a pool connection.",
        "s",
        [
            Query(
                b.agg("max", b.database(m.DATABASE_OLDEST_IDLE_IN_TRANSACTION), *per_application),
                "idle in transaction {{application_name}} ({{database}})",
            ),
            Query(
                b.agg("max", b.database(m.DATABASE_OLDEST_TRANSACTION), *per_application),
                "transaction {{application_name}} ({{database}})",
            ),
        ],
        bands=steps(None, cfg.idle_in_transaction_seconds),
        threshold_style="line",
        overrides=[override("^idle in transaction .*", "orange")],
    )
    roles = timeseries(
        "Connections per role vs its connection limit",
        "Client connections each role holds, against its CONNECTION LIMIT (dashed) where it "
        "has one: a role's limit refuses its connections before max_connections does.",
        "short",
        [
            Query(b.agg("max", b.database(m.DATABASE_ROLE_CONNECTIONS), "role"), "{{role}}"),
            Query(
                b.agg("max", b.database(m.DATABASE_ROLE_CONNECTION_LIMIT), "role"),
                "{{role}} limit",
            ),
        ],
        overrides=[override(".* limit$", "red", dashed=True)],
    )
    share = timeseries(
        "Share of each connection limit in use",
        "Connections / CONNECTION LIMIT for every role and database that has a limit; the "
        "band is where the limit alerts fire.",
        "percentunit",
        # the rules' own definitions
        [
            Query(b.role_limit_share(by=TOTAL), "role {{role}}"),
            Query(b.database_limit_share(by=TOTAL), "database {{database}}"),
        ],
        bands=steps(cfg.connection_limit_warning, 1.0),
        threshold_style="line+area",
    )
    return "What the database is stuck on", [(ages, 8, 8), (roles, 8, 8), (share, 8, 8)]


def through_the_pooler(b: Builder) -> Row:
    """Left to right as a request goes: the fleet's pools, the pooler's clients, the pooler's
    server connections, the database's connections."""
    pools_in_use = b.agg("sum", b.fleet_pool(m.CONNECTIONS, 'state="in_use"'))
    fleet_pools = timeseries(
        "1. Fleet's pools",
        "Connections the fleet's pools have checked out, callers waiting in the pools, and "
        "what the pools may open: every checked-out connection is a client of the pooler.",
        "short",
        [
            Query(pools_in_use, "pools in use"),
            Query(b.agg("sum", b.fleet_pool(m.WAITING)), "callers waiting in the pools"),
            Query(b.fleet_capacity(by=TOTAL), "pools can open"),
        ],
        overrides=[override("^pools can open$", "red", dashed=True)],
    )
    clients = timeseries(
        "2. Pooler: client connections",
        "The pooler's client connections by state, per pooler: waiting ones are queued for a "
        "server connection (their application connection is checked out meanwhile), against "
        "max_client_conn (dashed).",
        "short",
        [
            Query(
                b.agg("sum", b.pooler(m.PGBOUNCER_CLIENTS), "pooler", "state"),
                "{{pooler}} {{state}}",
            ),
            Query(
                b.agg("max", b.pooler(m.PGBOUNCER_MAX_CLIENT_CONN), "pooler"),
                "{{pooler}} max_client_conn",
            ),
        ],
        stacked=True,
        overrides=[
            override(".* waiting$", "orange"),
            override(".* max_client_conn$", "red", dashed=True),
        ],
    )
    servers = timeseries(
        "3. Pooler: server connections vs pool size",
        "The pooler's server connections by state (stacked) per pooler and database, against "
        "the pool size (dashed): active at the pool size while clients wait is the pooler "
        "limiting the database, as it should in transaction mode.",
        "short",
        [
            Query(
                b.agg("sum", b.pooler(m.PGBOUNCER_SERVERS), "pooler", "database", "state"),
                "{{pooler}} {{database}} {{state}}",
            ),
            Query(
                b.agg("max", b.pooler(m.PGBOUNCER_DB_POOL_SIZE), "pooler", "database"),
                "{{pooler}} {{database}} pool_size",
            ),
        ],
        stacked=True,
        overrides=[override(".* pool_size$", "red", dashed=True)],
    )
    db = timeseries(
        "4. Database: connections by state",
        "What reaches the database: its client connections by state against max_connections. "
        "Behind a pooler in transaction mode this stays near the pooler's pool size however "
        "busy the fleet; in session mode it follows the fleet's open connections.",
        "short",
        [
            Query(
                b.database_connections("database", "state", by=TOTAL),
                "{{database}} {{state}}",
            ),
            Query(b.database_setting(m.DATABASE_MAX_CONNECTIONS, by=TOTAL), "max_connections"),
        ],
        stacked=True,
        overrides=[override("^max_connections$", "red", dashed=True)],
    )
    wait = timeseries(
        "Oldest client waiting in the pooler",
        "How long the oldest client queued in each pooler pool has waited (maxwait and "
        "maxwait_us together, so waits under a second show), against the applications' "
        "pool timeout (dashed): a client waiting here holds an application connection.",
        "s",
        [
            Query(
                b.agg("max", b.pooler(m.PGBOUNCER_MAXWAIT), "pooler", "database", "user"),
                "{{pooler}} {{database}}/{{user}}",
            ),
            Query(b.agg("min", b.fleet_pool(m.TIMEOUT)), "pool timeout"),
        ],
        overrides=[override("^pool timeout$", "red", dashed=True)],
    )
    up = stat(
        "Poolers reachable",
        "Whether every pooler's admin console answered the sidecar at its last scrape.",
        "bool_yes_no",
        Query(b.agg("min", b.pooler(m.PGBOUNCER_UP)), "up"),
        [{"color": "red", "value": None}, {"color": "green", "value": 1}],
    )
    return "Through the pooler (PgBouncer)", [
        (fleet_pools, 6, 9),
        (clients, 6, 9),
        (servers, 6, 9),
        (db, 6, 9),
        (wait, 18, 7),
        (up, 6, 7),
    ]


def held(b: Builder) -> Row:
    oldest = timeseries(
        "Oldest checkout age vs pool timeout",
        "How long the connection out longest has been out, per pool and worker, against the "
        "pool timeout (red dashed): a leak climbs in a straight line and never drops; a slow "
        "query climbs and falls back when it finishes.",
        "s",
        [
            Query(b.agg("max", gauge(b, m.OLDEST_CHECKOUT), *PER_WORKER), WORKER_LEGEND),
            Query(b.agg("max", gauge(b, m.TIMEOUT), "pool"), "timeout {{pool}}"),
        ],
        overrides=[override("^timeout .*", "red", dashed=True)],
    )
    long = timeseries(
        "Long checkouts and leaked connections",
        "Checkouts per second held past the application's long_checkout_threshold, and "
        "connections the garbage collector returned because the application never closed them; "
        "the application log names where they were borrowed.",
        "ops",
        [
            Query(per_pool(b, m.LONG_CHECKOUTS), "long {{pool}}"),
            Query(per_pool(b, m.GC_RETURNED), "leaked {{pool}}"),
        ],
        bands=steps(None, 0.001),
        threshold_style="line",
    )
    return "Held connections", [(oldest, 12, 8), (long, 12, 8)]


ROWS = (
    saturation,
    latency,
    errors,
    churn,
    held,
    holders,
    database_and_fleet,
    stuck,
    through_the_pooler,
)


def fleet_legend(b: Builder) -> str:
    values = " ".join(f"{{{{{label}}}}}" for label in b.cfg.fleet_labels)
    return f"fleet capacity / available slots {values}"


# -- variables and annotations --------------------------------------------------------------


def variables(b: Builder) -> list[g.Template]:
    cfg = b.cfg

    # Each variable lists the values left by the ones before it: the rules' builder, bare.
    bare = Builder(cfg)

    def values_of(label: str, *matchers: str) -> str:
        return f"label_values({bare.pool(m.INFO, *matchers)}, {label})"

    found = [datasource_variable()]
    cluster = cluster_matchers(cfg)
    if cfg.cluster_label:
        # One cluster at a time, as the monitoring mixins show it; only there when the
        # config names a cluster label.
        found.append(
            query_variable(
                CLUSTER_VARIABLE, "Cluster", values_of(cfg.cluster_label), include_all=False
            )
        )
    return [
        *found,
        query_variable("job", "Job", values_of("job", *cluster)),
        query_variable("instance", "Instance", values_of("instance", *cluster, JOB)),
        query_variable("pool", "Pool", values_of("pool", *cluster, JOB, INSTANCE)),
        query_variable("worker", "Worker", values_of(WORKER, *cluster, JOB, INSTANCE, POOL)),
    ]


def annotation_queries(b: Builder) -> list[dict[str, Any]]:
    events = b.fleet_pool(m.EVENT_LAST_TIMESTAMP, INSTANCE)
    return [
        {
            "builtIn": 1,
            "datasource": GRAFANA_DATASOURCE,
            "enable": True,
            "hide": True,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard",
        },
        {
            "datasource": DATASOURCE,
            "enable": True,
            "expr": b.agg("max", events, "event") + " * 1000",
            "hide": False,
            "iconColor": "purple",
            "name": "Marked events",
            "step": "15s",
            "tagKeys": "event",
            "textFormat": "marked with pool_exporter.mark_event()",
            "titleFormat": "{{event}}",
            # The value is the event's own time (ms), so the mark sits where it happened
            # rather than at the next scrape or evaluation step.
            "useValueForTime": True,
        },
        {
            "datasource": DATASOURCE,
            "enable": True,
            "expr": b.firing_alerts(),
            "hide": False,
            "iconColor": "red",
            "name": "Alerts firing",
            "step": "15s",
            "tagKeys": "alertname,severity",
            "textFormat": "{{severity}} {{pool}} {{instance}}",
            "titleFormat": "{{alertname}}",
            "useValueForTime": False,
        },
    ]


# -- assembling -----------------------------------------------------------------------------


def build(cfg: MixinConfig) -> g.Dashboard:
    """The dashboard as grafanalib objects."""
    b = builder(cfg)
    return g.Dashboard(
        title=cfg.dashboard_title,
        uid=cfg.dashboard_uid,
        description="SQLAlchemy connection pools exported by pool-exporter: saturation, "
        "latency, errors, churn, and the database they share.",
        tags=list(cfg.dashboard_tags),
        timezone="browser",
        refresh=cfg.dashboard_refresh,
        time=g.Time(cfg.dashboard_time_from, "now"),
        graphTooltip=g.GRAPH_TOOLTIP_MODE_SHARED_CROSSHAIR,
        schemaVersion=SCHEMA_VERSION,
        templating=g.Templating(list=variables(b)),
        annotations=g.Annotations(list=annotation_queries(b)),
        panels=layout([row(b) for row in ROWS]),
    ).auto_panel_ids()


def dashboard(cfg: MixinConfig) -> dict[str, Any]:
    """The dashboard as Grafana 10/11 import it."""
    return to_json_data(build(cfg))


def generate(cfg: MixinConfig, out_dir: Path) -> dict[Path, str]:
    """{path: text} of every dashboard file the config produces."""
    return {out_dir / cfg.dashboard_file: render(dashboard(cfg))}
