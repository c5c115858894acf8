"""What the pool is and is doing besides its checkouts: its settings on `sqlalchemy_pool_info`
and `sqlalchemy_pool_recycle_seconds`, and the connections being opened right now."""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

import pool_exporter
from tests.support.exposition import scrape, value
from tests.support.procs import wait_until

OPENING = "sqlalchemy_pool_opening_connections"


def info_labels(registry: CollectorRegistry, pool: str) -> dict[str, str]:
    """The labels of the pool's one `sqlalchemy_pool_info` series."""
    found = [
        dict(labels)
        for (name, labels) in scrape(registry)
        if name == "sqlalchemy_pool_info" and dict(labels)["pool"] == pool
    ]
    assert len(found) == 1, found
    return found[0]


def test_the_pools_settings_are_info_labels_and_pool_recycle_a_gauge(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(
        sqlite_url,
        pool_pre_ping=True,
        pool_use_lifo=True,
        pool_reset_on_return="commit",
        pool_recycle=30,
        isolation_level="READ UNCOMMITTED",
    )
    engines.append(engine)
    pool_exporter.instrument(engine, name="set", registry=registry)
    assert info_labels(registry, "set") == {
        "pool": "set",
        "pool_class": "QueuePool",
        "dialect": "sqlite",
        "driver": "pysqlite",
        "pre_ping": "true",
        "use_lifo": "true",
        "reset_on_return": "commit",
        "isolation_level": "READ UNCOMMITTED",  # set on the engine: known before connecting
    }
    assert value(registry, "sqlalchemy_pool_recycle_seconds", pool="set") == 30
    engine.dispose()  # the next pool has the same settings
    engine.connect().close()
    assert info_labels(registry, "set")["use_lifo"] == "true"
    assert value(registry, "sqlalchemy_pool_recycle_seconds", pool="set") == 30


def test_what_is_unset_or_not_yet_known_is_left_out(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(sqlite_url, poolclass=sa.pool.NullPool)
    engines.append(engine)
    pool_exporter.instrument(engine, name="bare", registry=registry)
    # No use_lifo outside queue pools, no isolation level before the first connection, no
    # recycle where none is set.
    assert info_labels(registry, "bare") == {
        "pool": "bare",
        "pool_class": "NullPool",
        "dialect": "sqlite",
        "driver": "pysqlite",
        "pre_ping": "false",
        "reset_on_return": "rollback",
    }
    names = {name for (name, labels) in scrape(registry) if dict(labels).get("pool") == "bare"}
    assert "sqlalchemy_pool_recycle_seconds" not in names
    engine.connect().close()
    # the database's default, which the dialect read on that first connection
    assert info_labels(registry, "bare")["isolation_level"] == "SERIALIZABLE"


def test_the_isolation_level_of_postgresql_is_read_from_the_server(
    registry: CollectorRegistry, pg_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(pg_url, pool_size=1)
    engines.append(engine)
    pool_exporter.instrument(engine, name="pg", registry=registry)
    assert "isolation_level" not in info_labels(registry, "pg")
    with engine.connect() as conn:
        conn.exec_driver_sql("select 1")
    assert info_labels(registry, "pg")["isolation_level"] == "READ COMMITTED"


def test_a_connection_being_opened_shows_until_the_driver_returns(
    registry: CollectorRegistry, tmp_path: object, engines: list[sa.Engine]
) -> None:
    gate = threading.Event()
    path = f"{tmp_path}/slow.db"

    def slow_connect() -> Any:
        gate.wait(10)  # a database slow to accept
        return sqlite3.connect(path, check_same_thread=False)

    engine = sa.create_engine("sqlite://", creator=slow_connect, poolclass=sa.pool.QueuePool)
    engines.append(engine)
    pool_exporter.instrument(engine, name="slow", registry=registry)
    assert value(registry, OPENING, pool="slow") == 0
    callers = [threading.Thread(target=lambda: engine.connect().close()) for _ in range(2)]
    for t in callers:
        t.start()
    wait_until(lambda: value(registry, OPENING, pool="slow") >= 2, what="two connections opening")
    assert value(registry, OPENING, pool="slow") == 2
    assert value(registry, "sqlalchemy_pool_connects_total", pool="slow") == 0
    gate.set()
    for t in callers:
        t.join()
    assert value(registry, OPENING, pool="slow") == 0
    assert value(registry, "sqlalchemy_pool_connects_total", pool="slow") == 2


def test_a_refused_connection_stops_showing_as_being_opened(
    registry: CollectorRegistry, engines: list[sa.Engine]
) -> None:
    def refuse() -> Any:
        raise sqlite3.OperationalError("unable to open database file")  # the driver's error

    engine = sa.create_engine("sqlite://", creator=refuse, poolclass=sa.pool.QueuePool)
    engines.append(engine)
    pool_exporter.instrument(engine, name="refused", registry=registry)
    for _ in range(2):
        with pytest.raises(sa.exc.OperationalError):
            engine.connect()
    assert value(registry, OPENING, pool="refused") == 0
    assert value(registry, "sqlalchemy_pool_connect_errors_total", pool="refused") == 2
