"""The sidecar's database view against the real PostgreSQL, and how it fails."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from pool_exporter import metrics as m
from pool_exporter.sidecar.database import (
    DatabaseCollector,
    Row,
    busiest_applications,
    fold_ages,
    fold_roles,
    fold_rows,
)

from .support import pg_limits
from .support import procs as p
from .support.cli import assert_sidecar_refuses_quietly
from .support.procs import Procs, Samples, procs

__all__ = ["procs"]

PASSWORD = "Hunter2-never-shown-9f3a"

pytestmark = pytest.mark.postgres


def libpq(pg_url: str) -> str:
    return pg_url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def sessions(pg_url: str, pg_app_name: str) -> Iterator[list[psycopg.Connection]]:
    """Connections the test opens under its own application_name; closed at the end."""
    made: list[psycopg.Connection] = []
    yield made
    for conn in made:
        conn.close()


def query(pg_url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    """The test's own look at the server, on a connection of its own."""
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def count_by_state(pg_url: str, application_name: str) -> dict[str, int]:
    rows = query(
        pg_url,
        "SELECT state, count(*) FROM pg_stat_activity WHERE application_name = %s GROUP BY state",
        application_name,
    )
    return {str(state): int(str(n)) for state, n in rows}


def test_database_view_agrees_with_pg_stat_activity(
    tmp_path: Path,
    procs: Procs,
    pg_url: str,
    pg_app_name: str,
    sessions: list[psycopg.Connection],
) -> None:
    for n in range(5):
        conn = psycopg.connect(libpq(pg_url), application_name=pg_app_name)
        if n < 2:
            conn.execute("SELECT 1")  # leaves the session idle in transaction
        sessions.append(conn)
    url_file = tmp_path / "database-url"
    url_file.write_text(pg_url + f"?application_name={pg_app_name}-sidecar\n")
    # Every name gets a series here, however many other clients the server has.
    sidecar = p.start_sidecar(
        procs, tmp_path, f"--database-url-file={url_file}", "--database-max-applications=1000"
    )

    def ours(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, int]:
        return {
            s[1]["state"]: int(s[2])
            for s in p.select(samples, "pool_exporter_database_connections")
            if s[1]["application_name"] == pg_app_name
        }

    samples = sidecar.scrape()
    assert p.total(samples, "pool_exporter_database_up") == 1
    assert ours(samples) == count_by_state(pg_url, pg_app_name)
    assert ours(samples) == {"idle": 3, "idle in transaction": 2}
    assert {s[1]["database"] for s in p.select(samples, "pool_exporter_database_connections")} >= {
        "test"
    }
    rows = query(
        pg_url,
        "SELECT name, setting::int FROM pg_settings WHERE name IN "
        "('max_connections', 'superuser_reserved_connections', 'reserved_connections')",
    )
    settings = {str(name): int(str(value)) for name, value in rows}
    reserved = settings["superuser_reserved_connections"] + settings.get("reserved_connections", 0)
    assert p.total(samples, "pool_exporter_database_max_connections") == settings["max_connections"]
    assert p.total(samples, "pool_exporter_database_reserved_connections") == reserved
    used = p.total(samples, "pool_exporter_database_connections")
    assert p.total(samples, "pool_exporter_database_free_connections") == max(
        0, settings["max_connections"] - reserved - used
    )

    # Each scrape is a fresh look, on the connection the sidecar keeps.
    sessions.pop().close()
    sessions.pop().close()
    samples = p.wait_until(
        lambda: (s := sidecar.scrape()) and ours(s) == {"idle": 1, "idle in transaction": 2} and s
    )
    # The sidecar's one connection counts too: busy with the query while it scrapes.
    own = p.select(samples, "pool_exporter_database_connections")
    assert [
        (s[1]["state"], s[2]) for s in own if s[1]["application_name"] == f"{pg_app_name}-sidecar"
    ] == [("active", 1)]
    assert count_by_state(pg_url, f"{pg_app_name}-sidecar") == {"idle": 1}


Activity = Counter[tuple[str, str, str]]  # (database, state, application_name): connections


def activity(conn: psycopg.Connection) -> Activity:
    rows = conn.execute(
        "SELECT coalesce(datname, ''), coalesce(state, 'unknown'), "
        "coalesce(application_name, ''), count(*) FROM pg_stat_activity "
        "WHERE backend_type = 'client backend' GROUP BY 1, 2, 3"
    ).fetchall()
    return Counter({(str(d), str(s), str(a)): int(n) for d, s, a, n in rows})


def per_name(counts: Activity) -> Counter[str]:
    names: Counter[str] = Counter()
    for (_, _, name), n in counts.items():
        names[name] += n
    return names


def scraped(samples: Samples) -> Activity:
    return Counter(
        {
            (s[1]["database"], s[1]["state"], s[1]["application_name"]): int(s[2])
            for s in p.select(samples, m.DATABASE_CONNECTIONS.name)
        }
    )


@pytest.mark.parametrize("limit", [3, 0])
def test_only_the_busiest_application_names_get_series_and_the_sum_stays_exact(
    tmp_path: Path,
    procs: Procs,
    pg_url: str,
    pg_app_name: str,
    sessions: list[psycopg.Connection],
    *,
    pg_database: str,
    promtool: str,
    limit: int,
) -> None:
    # Every connection of the test in a database of its own: the counts by state there are the
    # test's alone, where other clients of the shared server change state between two looks.
    url = f"{pg_url.rsplit('/', 1)[0]}/{pg_database}"
    busy = {f"{pg_app_name}-a": 4, f"{pg_app_name}-b": 3, f"{pg_app_name}-c": 2}
    # A client calling itself "(other)" is folded too, however busy: the value keeps one meaning.
    quiet = {f"{pg_app_name}-pid{n}": 1 for n in range(3)} | {m.OTHER_APPLICATIONS: 5}
    for name, n in (busy | quiet).items():
        sessions.extend(
            psycopg.connect(libpq(url), application_name=name, autocommit=True) for _ in range(n)
        )
    # The test's own look, on a connection open throughout, so that it counts in both views.
    observer = psycopg.connect(
        libpq(url), application_name=f"{pg_app_name}-observer", autocommit=True
    )
    sessions.append(observer)
    sidecar = p.start_sidecar(
        procs,
        tmp_path,
        f"--database-max-applications={limit}",
        env={"POOL_EXPORTER_DATABASE_URL": f"{url}?application_name={pg_app_name}-sidecar"},
    )

    def steady() -> tuple[Activity, str] | None:
        # Other clients of the shared server come, go and change state: take a scrape that the
        # test's own looks, before and after it, agree on.
        before = activity(observer)
        text = sidecar.text()
        after = activity(observer)
        return (before, text) if before == after else None

    truth, text = p.wait_until(steady, 30, "pg_stat_activity to hold still across a scrape")
    samples = p.parse(text)
    names = per_name(truth)
    series = scraped(samples)

    assert p.total(samples, m.DATABASE_UP.name) == 1
    assert sum(series.values()) == sum(truth.values())
    assert p.total(samples, m.DATABASE_APPLICATION_NAMES.name) == len(names)
    kept = {name for (_, _, name) in series} - {m.OTHER_APPLICATIONS}
    folded = set(names) - kept
    assert len(kept) == limit < len(names)
    assert {m.OTHER_APPLICATIONS, *quiet} <= folded
    # The kept names are the busiest; a tie goes to the name that sorts first.
    for name in kept:
        for other in folded - {m.OTHER_APPLICATIONS}:
            assert (names[name], other) > (names[other], name), (name, other, names)
    # By state, exact in the test's own database (another's connections may change state and
    # back between the test's look and the scrape).
    for key, n in truth.items():
        if key[2] in kept and key[0] == pg_database:
            assert series[key] == n, key
    # The sidecar's connection is active while it scrapes and idle while the observer looks, the
    # observer's the other way round; both are in one database and folded (1 connection each),
    # so the folded counts per state still agree.
    states = {s for (d, s, _) in truth if d == pg_database}
    assert states == {"idle", "active"}
    for state in states:
        rest = sum(
            n for (d, s, a), n in truth.items() if (d, s) == (pg_database, state) and a in folded
        )
        assert series[pg_database, state, m.OTHER_APPLICATIONS] == rest, state

    result = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def fold_applications(rows: list[Row], limit: int) -> tuple[list[Row], int]:
    """The rows as the collector serves them with a cap of `limit` names, and how many
    distinct names there were."""
    kept, names = busiest_applications(rows, limit)
    return fold_rows(rows, kept), names


def test_ties_at_the_cap_go_to_the_name_that_sorts_first_whatever_the_row_order() -> None:
    rows = [
        ("shop", "idle", "web", 2),
        ("shop", "active", "web", 1),
        ("shop", "idle", "api", 3),
        ("audit", "idle", "cron", 3),
        ("shop", "idle", "", 1),
        ("shop", "idle", m.OTHER_APPLICATIONS, 9),
    ]
    # api, cron and web have 3 connections each; "(other)" has more but is never kept.
    expected = [
        ("audit", "idle", "cron", 3),
        ("shop", "active", m.OTHER_APPLICATIONS, 1),
        ("shop", "idle", m.OTHER_APPLICATIONS, 12),
        ("shop", "idle", "api", 3),
    ]
    assert fold_applications(rows, 2) == (expected, 5)
    assert fold_applications(rows[::-1], 2) == (expected, 5)
    assert fold_applications(rows, 0)[0] == [
        ("audit", "idle", m.OTHER_APPLICATIONS, 3),
        ("shop", "active", m.OTHER_APPLICATIONS, 1),
        ("shop", "idle", m.OTHER_APPLICATIONS, 15),
    ]


@pytest.mark.parametrize("limit", [-1, 2.5, True, "3"])
def test_a_cap_that_is_not_a_whole_number_of_0_or_more_is_refused(limit: object) -> None:
    with pytest.raises(ValueError, match="max_applications must be a whole number, 0 or more"):
        DatabaseCollector("postgresql://127.0.0.1/test", max_applications=limit)  # type: ignore[arg-type]


def test_a_terminated_sidecar_connection_is_replaced_within_the_same_scrape(
    tmp_path: Path, procs: Procs, pg_url: str, pg_app_name: str
) -> None:
    name = f"{pg_app_name}-sidecar"
    sidecar = p.start_sidecar(
        procs, tmp_path, env={"POOL_EXPORTER_DATABASE_URL": f"{pg_url}?application_name={name}"}
    )
    assert p.total(sidecar.scrape(), "pool_exporter_database_up") == 1
    killed = query(
        pg_url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        name,
    )
    assert killed == [(1,)]
    assert p.total(sidecar.scrape(), "pool_exporter_database_up") == 1
    assert "cannot be queried" not in sidecar.proc.output()


@pytest.mark.parametrize("failure", ["closed port", "no such role and database"])
def test_an_unreachable_database_is_up_0_and_the_pool_metrics_are_still_served(
    tmp_path: Path, procs: Procs, pg_url: str, failure: str
) -> None:
    if failure == "closed port":
        url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{p.free_port()}/test"
    else:
        url = f"postgresql+psycopg://nosuchrole:{PASSWORD}@127.0.0.1:5432/nosuchdb"
    procs.writer(tmp_path, "--checkouts", "4")
    sidecar = p.start_sidecar(
        procs, tmp_path, "--database-timeout=2", env={"POOL_EXPORTER_DATABASE_URL": url}
    )
    texts = [sidecar.text() for _ in range(3)]
    for text in texts:
        assert PASSWORD not in text
    samples = sidecar.scrape()
    assert p.total(samples, "pool_exporter_database_up") == 0
    assert not p.select(samples, "pool_exporter_database_max_connections")
    assert p.total(samples, "pool_exporter_multiprocess_up") == 1
    assert p.total(samples, "sqlalchemy_pool_checkouts_total", pool="pool0") == 4

    log = sidecar.proc.output()
    assert PASSWORD not in log
    errors = [line for line in log.splitlines() if "cannot be queried" in line]
    assert len(errors) == 1, log  # once when it goes down, not at every scrape
    assert "127.0.0.1:" in errors[0]
    assert "pool_exporter_database_up 0" in errors[0]


SECRET_URL = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test"
FROM_FILE = ["--database-url-file={url_file}"]


@pytest.mark.parametrize(
    ("contents", "args", "env"),
    [
        pytest.param(None, [f"--database-url={SECRET_URL}"], {}, id="on the command line"),
        pytest.param(f"mysql://root:{PASSWORD}@127.0.0.1/test", FROM_FILE, {}, id="not postgres"),
        pytest.param(
            None,
            [],
            {"POOL_EXPORTER_DATABASE_URL": f"host=127.0.0.1 password={PASSWORD}"},
            id="not a URL",
        ),
        pytest.param(
            SECRET_URL,
            FROM_FILE,
            {"POOL_EXPORTER_DATABASE_URL": SECRET_URL},
            id="file and environment",
        ),
        pytest.param("\n", FROM_FILE, {}, id="empty file"),
    ],
)
def test_a_database_url_that_cannot_be_used_is_refused_without_echoing_it(
    tmp_path: Path, contents: str | None, args: list[str], env: dict[str, str]
) -> None:
    assert_sidecar_refuses_quietly(tmp_path, PASSWORD, args, env, contents)


# -- what the database is stuck on: open transactions and connection limits --------------------


def collected(collector: DatabaseCollector) -> Samples:
    """One scrape of the collector, in process, parsed as Prometheus would read it."""
    registry = CollectorRegistry()
    registry.register(collector)
    return p.parse(generate_latest(registry).decode())


def by_label(samples: Samples, metric: m.Metric, label: str, **where: str) -> dict[str, float]:
    return {s[1][label]: s[2] for s in p.select(samples, metric.name, **where)}


def test_a_session_idle_in_a_transaction_for_3_s_shows_its_age_under_its_application_name(
    pg_url: str, pg_app_name: str, sessions: list[psycopg.Connection]
) -> None:
    stuck, idle = f"{pg_app_name}-stuck", f"{pg_app_name}-idle"
    began = time.monotonic()
    conn = psycopg.connect(libpq(pg_url), application_name=stuck)
    sessions.append(conn)
    conn.execute("SELECT 1")  # opens a transaction and leaves it idle
    sessions.append(psycopg.connect(libpq(pg_url), application_name=idle, autocommit=True))
    every_name = DatabaseCollector(pg_url, max_applications=1000)
    folded = DatabaseCollector(pg_url, max_applications=0)
    try:
        time.sleep(3)  # the time the session is left idle in its transaction: what is measured
        samples = collected(every_name)
        elapsed = time.monotonic() - began
        samples_folded = collected(folded)
    finally:
        every_name.close()
        folded.close()

    idle_age = by_label(samples, m.DATABASE_OLDEST_IDLE_IN_TRANSACTION, "application_name")
    open_age = by_label(samples, m.DATABASE_OLDEST_TRANSACTION, "application_name")
    assert 2 <= idle_age[stuck] <= elapsed
    # The transaction began with its statement, before the session went idle.
    assert idle_age[stuck] <= open_age[stuck] <= elapsed
    # A session with no transaction open has its series, at 0: none is stuck.
    assert idle_age[idle] == open_age[idle] == 0
    # Folded into (other), the oldest is still the oldest: maxima stay exact.
    other = by_label(
        samples_folded,
        m.DATABASE_OLDEST_IDLE_IN_TRANSACTION,
        "database",
        application_name=m.OTHER_APPLICATIONS,
    )
    assert other["test"] >= idle_age[stuck]


@pytest.fixture
def limited_role(pg_url: str) -> Iterator[str]:
    """A login role with CONNECTION LIMIT 5, of a unique name; dropped at the end."""
    with pg_limits.limited_role(pg_url, 5) as role:
        yield role


def test_a_role_with_connection_limit_5_shows_its_limit_and_its_connections(
    pg_url: str, limited_role: str, sessions: list[psycopg.Connection]
) -> None:
    sessions.extend(pg_limits.connect(pg_url, user=limited_role) for _ in range(2))
    collector = DatabaseCollector(pg_url, max_roles=1000)
    try:
        samples = collected(collector)
    finally:
        collector.close()
    connections = by_label(samples, m.DATABASE_ROLE_CONNECTIONS, "role")
    limits = by_label(samples, m.DATABASE_ROLE_CONNECTION_LIMIT, "role")
    assert connections[limited_role] == 2
    assert limits[limited_role] == 5
    # postgres has no limit (-1): its connections, and no limit series, not a made-up number.
    assert connections["postgres"] >= 1 and "postgres" not in limits
    assert p.total(samples, m.DATABASE_ROLES.name) == len(connections)
    # Every client connection has a role: the two views count the same sessions.
    assert sum(connections.values()) == p.total(samples, m.DATABASE_CONNECTIONS.name)


def test_roles_beyond_the_sidecars_cap_are_counted_as_other_and_the_sum_stays_exact(
    tmp_path: Path,
    procs: Procs,
    pg_url: str,
    limited_role: str,
    sessions: list[psycopg.Connection],
) -> None:
    sessions.append(pg_limits.connect(pg_url, user=limited_role))
    env = {"POOL_EXPORTER_DATABASE_URL": pg_url}
    samples = p.start_sidecar(procs, tmp_path, "--database-max-roles=0", env=env).scrape()
    connections = by_label(samples, m.DATABASE_ROLE_CONNECTIONS, "role")
    assert list(connections) == [m.OTHER_ROLES]
    assert not p.select(samples, m.DATABASE_ROLE_CONNECTION_LIMIT.name)
    assert connections[m.OTHER_ROLES] == p.total(samples, m.DATABASE_CONNECTIONS.name)
    assert p.total(samples, m.DATABASE_ROLES.name) >= 2  # postgres and the limited role


def test_a_database_with_a_connection_limit_shows_it_and_one_without_shows_none(
    pg_url: str, sessions: list[psycopg.Connection]
) -> None:
    with pg_limits.limited_database(pg_url, 3) as database:
        sessions.append(pg_limits.connect(pg_url, dbname=database))
        collector = DatabaseCollector(pg_url)
        try:
            samples = collected(collector)
        finally:
            collector.close()
    limits = by_label(samples, m.DATABASE_CONNECTION_LIMIT, "database")
    assert limits[database] == 3
    assert "test" not in limits  # no limit (-1): no series
    held = sum(s[2] for s in p.select(samples, m.DATABASE_CONNECTIONS.name, database=database))
    assert held == 1


def test_roles_nearest_their_limit_are_kept_before_busier_ones_without() -> None:
    roles = [
        ("web", -1, 40),
        ("batch", 10, 9),  # 90 % of its limit
        ("report", 100, 50),  # 50 %
        ("admin", -1, 3),
        ("locked", 0, 0),  # CONNECTION LIMIT 0: a limit, never "near" it
        (m.OTHER_ROLES, -1, 99),  # a role really called so is always folded
    ]
    assert fold_roles(roles, 3) == (
        [("batch", 10, 9), ("locked", 0, 0), ("report", 100, 50)],
        40 + 3 + 99,
    )
    assert fold_roles(roles, 4)[0] == sorted([*fold_roles(roles, 3)[0], ("web", -1, 40)])
    assert fold_roles(roles[:5], 5) == (sorted(roles[:5]), None)
    assert fold_roles(roles, 0) == ([], 40 + 9 + 50 + 3 + 0 + 99)


def test_ages_folded_into_other_keep_the_oldest_per_database() -> None:
    ages = [
        ("shop", "web", 0.0, 1.5),
        ("shop", "cron", 7.0, 9.0),
        ("shop", "api", 2.0, 30.0),
        ("audit", "cron", 0.0, 0.0),
    ]
    assert fold_ages(ages, {"web"}) == [
        ("audit", m.OTHER_APPLICATIONS, 0.0, 0.0),
        ("shop", m.OTHER_APPLICATIONS, 7.0, 30.0),
        ("shop", "web", 0.0, 1.5),
    ]
