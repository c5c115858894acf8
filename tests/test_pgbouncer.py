"""The sidecar's PgBouncer view against a real PgBouncer in front of the real PostgreSQL."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from prometheus_client import CollectorRegistry

from pool_exporter import metrics as m
from pool_exporter.incident.promserver import free_port
from pool_exporter.sidecar.pgbouncer import (
    PgBouncerCollector,
    PoolerListError,
    fold_pools,
    parse_poolers,
)

from .support import pgbouncer as pgb
from .support.cli import assert_sidecar_refuses_quietly
from .support.exposition import scrape, value
from .support.procs import Procs, procs, start_sidecar, total, wait_until

__all__ = ["procs"]

pytestmark = pytest.mark.postgres

PASSWORD = "Hunter2-never-shown-7c1d"


@pytest.fixture
def bouncer(pg_url: str) -> Iterator[pgb.PgBouncer]:
    """PgBouncer in transaction mode with pools of 2; fails (not skips) when not installed."""
    pgb.require()
    with pgb.running(pool_size=2, max_client_conn=40) as running:
        yield running


def collector_for(url: str, registry: CollectorRegistry, **kwargs: int) -> PgBouncerCollector:
    collector = PgBouncerCollector(parse_poolers(f"edge={url}"), **kwargs)
    registry.register(collector)
    return collector


def test_clients_waiting_in_the_pooler_are_seen_with_sub_second_waits(
    bouncer: pgb.PgBouncer, registry: CollectorRegistry, pg_app_name: str
) -> None:
    url = bouncer.url().replace("postgresql+psycopg", "postgresql")
    # Two open transactions hold both server connections of the pool (transaction mode).
    holders = [psycopg.connect(url, application_name=pg_app_name) for _ in range(2)]
    for conn in holders:
        conn.execute("SELECT 1")
    waiter = psycopg.connect(url, application_name=pg_app_name, autocommit=True)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (waiter.execute("SELECT 1"), done.set()))
    collector = collector_for(bouncer.admin_url, registry)
    labels = {"pooler": "edge", "database": "test", "user": "postgres"}
    clients = m.PGBOUNCER_CLIENTS.name
    try:
        started = time.monotonic()
        thread.start()
        waiting = (clients, tuple(sorted({**labels, "state": "waiting"}.items())))
        wait_until(lambda: scrape(registry).get(waiting) == 1, what="the client to queue")
        # A wait of 0.3 s at least, well under a second: it shows only in microseconds.
        time.sleep(max(0.0, started + 0.3 - time.monotonic()))
        assert value(registry, "pool_exporter_pgbouncer_up", pooler="edge") == 1
        assert value(registry, clients, **labels, state="waiting") == 1
        assert value(registry, clients, **labels, state="active") == 2
        assert value(registry, m.PGBOUNCER_SERVERS.name, **labels, state="active") == 2
        # maxwait alone is 0 here: the microseconds column carries the whole wait.
        waited = value(registry, m.PGBOUNCER_MAXWAIT.name, **labels)
        assert 0.2 <= waited < 30
        db = {"pooler": "edge", "database": "test"}
        assert value(registry, m.PGBOUNCER_DB_CURRENT_CONNECTIONS.name, **db) == 2
        assert value(registry, m.PGBOUNCER_DEFAULT_POOL_SIZE.name, pooler="edge") == 2
        assert value(registry, m.PGBOUNCER_MAX_CLIENT_CONN.name, pooler="edge") == 40
        assert value(registry, "pool_exporter_pgbouncer_config_info", pooler="edge",
                     pool_mode="transaction") == 1  # fmt: skip
        # The sidecar's own console connection is one of the used clients, not a pool.
        assert value(registry, m.PGBOUNCER_LIST_ITEMS.name, pooler="edge",
                     list="used_clients") == 4  # fmt: skip
        series = [dict(k[1]) for k in scrape(registry) if k[0] == m.PGBOUNCER_MAXWAIT.name]
        pools = {(s["database"], s["user"]) for s in series}
        assert pools == {("test", "postgres")}
    finally:
        for conn in holders:
            conn.rollback()
        thread.join(10)
        assert done.is_set()
        for conn in [*holders, waiter]:
            conn.close()
        collector.close()
    # The transactions show in SHOW STATS as counters.
    db = {"pooler": "edge", "database": "test"}
    assert value(registry, "pool_exporter_pgbouncer_transactions_total", **db) >= 3
    assert value(registry, "pool_exporter_pgbouncer_client_wait_seconds_total", **db) >= 0.2


def test_a_pooler_that_is_down_or_refuses_is_up_0_and_the_others_are_still_served(
    bouncer: pgb.PgBouncer, registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    dead = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/pgbouncer"
    # root may log in to the pooler but is neither in admin_users nor in stats_users.
    refusing = f"postgresql://root:{PASSWORD}@127.0.0.1:{bouncer.port}/pgbouncer"
    collector = PgBouncerCollector(
        parse_poolers(f"edge={bouncer.admin_url}\nghost={dead}\nnope={refusing}\n"), timeout=2
    )
    registry.register(collector)
    with caplog.at_level(logging.DEBUG, logger="pool_exporter"):
        assert value(registry, "pool_exporter_pgbouncer_up", pooler="ghost") == 0
        assert value(registry, "pool_exporter_pgbouncer_up", pooler="nope") == 0
        assert value(registry, "pool_exporter_pgbouncer_up", pooler="edge") == 1
        assert value(registry, m.PGBOUNCER_MAX_CLIENT_CONN.name, pooler="edge") == 40
        assert not [k for k in scrape(registry) if dict(k[1]).get("pooler") in ("ghost", "nope")
                    and k[0] not in ("pool_exporter_pgbouncer_up",
                                     m.PGBOUNCER_SCRAPE.name)]  # fmt: skip
        # Once more: still down, and logged once, at the change.
        assert value(registry, "pool_exporter_pgbouncer_up", pooler="ghost") == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 2, errors
    assert "ghost" in errors[0] and "nope" in errors[1] and "not allowed" in errors[1]
    assert PASSWORD not in caplog.text
    collector.close()


def test_a_restarted_pooler_is_reconnected_within_the_next_scrape(
    bouncer: pgb.PgBouncer, registry: CollectorRegistry
) -> None:
    collector = collector_for(bouncer.admin_url, registry)
    assert value(registry, "pool_exporter_pgbouncer_up", pooler="edge") == 1
    kept = collector._conns["edge"]
    bouncer.restart()  # the kept connection is dead, and does not know it yet
    assert value(registry, "pool_exporter_pgbouncer_up", pooler="edge") == 1
    assert collector._conns["edge"] is not kept
    collector.close()


def test_pooler_lists_name_each_pooler_and_never_repeat_a_password() -> None:
    poolers = parse_poolers(
        "# the fleet's poolers\n"
        f"eu=postgresql://stats:{PASSWORD}@pgb-eu:6432/pgbouncer\n"
        "postgresql://stats@pgb-us/pgbouncer?sslmode=require  us2=postgresql://pgb-us2\n"
    )
    assert [p.name for p in poolers] == ["eu", "pgb-us:6432", "us2"]
    assert poolers[0].target.kwargs["password"] == PASSWORD
    assert poolers[1].target.kwargs["sslmode"] == "require"
    assert poolers[2].target.kwargs["dbname"] == "pgbouncer"
    assert all(PASSWORD not in p.target.display for p in poolers)
    for bad, says in [
        (f"postgresql://u:{PASSWORD}@h/app", "admin database"),
        (f"a b=postgresql://u:{PASSWORD}@h/pgbouncer", "not a URL"),
        (f"x=postgresql://h/pgbouncer x=postgresql://u:{PASSWORD}@g/pgbouncer", "twice"),
        (f"bad/name=mysql://u:{PASSWORD}@h/pgbouncer", "name before"),
        ("# nothing\n", "no URL"),
    ]:
        with pytest.raises(PoolerListError) as info:
            parse_poolers(bad)
        assert says in str(info.value)
        assert PASSWORD not in str(info.value)


def test_only_the_busiest_pools_get_series_and_nothing_is_lost_from_the_sums() -> None:
    def pool(db: str, user: str, active: int, waiting: int = 0, wait_us: int = 0) -> dict:
        return {"database": db, "user": user, "cl_active": active, "cl_waiting": waiting,
                "sv_active": 0, "sv_idle": 0, "sv_used": 0, "sv_tested": 0, "sv_login": 0,
                "maxwait": 0, "maxwait_us": wait_us}  # fmt: skip

    rows = [pool("a", "u", 5), pool("b", "u", 1, 1, 400_000), pool("c", "u", 9), pool("d", "v", 1)]
    kept, count = fold_pools(rows, 2)
    assert count == 4
    assert [(r["database"], r["user"]) for r in kept] == [
        ("(other)", "(other)"),
        ("a", "u"),
        ("c", "u"),
    ]
    other = kept[0]
    assert (other["cl_active"], other["cl_waiting"], other["maxwait"]) == (2, 1, 0.4)
    assert fold_pools(rows, 0)[0][0]["cl_active"] == 16


def test_the_sidecar_serves_each_pooler_under_its_name(
    tmp_path: Path, procs: Procs, bouncer: pgb.PgBouncer
) -> None:
    dead = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/pgbouncer"
    url_file = tmp_path / "poolers"
    url_file.write_text(f"# the fleet's poolers\nedge={bouncer.admin_url}\nghost={dead}\n")
    sidecar = start_sidecar(
        procs, tmp_path, f"--pgbouncer-url-file={url_file}", "--database-timeout=2"
    )
    samples = sidecar.scrape()
    assert total(samples, "pool_exporter_pgbouncer_up", pooler="edge") == 1
    assert total(samples, "pool_exporter_pgbouncer_up", pooler="ghost") == 0
    assert total(samples, m.PGBOUNCER_MAX_CLIENT_CONN.name, pooler="edge") == 40
    # The application's side is still served beside them.
    assert total(samples, "pool_exporter_multiprocess_up") == 1
    log = sidecar.proc.output()
    assert "edge (127.0.0.1:" in log and "ghost" in log
    assert PASSWORD not in log


SECRET = f"postgresql://stats:{PASSWORD}@127.0.0.1:6432/pgbouncer"
POOLER_FILE = ["--pgbouncer-url-file={url_file}"]
NOT_ADMIN = f"edge={SECRET.replace('/pgbouncer', '/app')}"


@pytest.mark.parametrize(
    ("contents", "args", "env"),
    [
        pytest.param(None, [f"--pgbouncer-url={SECRET}"], {}, id="on the command line"),
        pytest.param(
            None, [], {"POOL_EXPORTER_PGBOUNCER_URL": NOT_ADMIN}, id="not the admin database"
        ),
        pytest.param(
            SECRET, POOLER_FILE, {"POOL_EXPORTER_PGBOUNCER_URL": SECRET}, id="file and environment"
        ),
        pytest.param("# none yet\n", POOLER_FILE, {}, id="empty"),
    ],
)
def test_a_pooler_list_that_cannot_be_used_is_refused_without_echoing_it(
    tmp_path: Path, contents: str | None, args: list[str], env: dict[str, str]
) -> None:
    assert_sidecar_refuses_quietly(tmp_path, PASSWORD, args, env, contents)
