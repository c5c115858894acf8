"""instrument(): what it accepts, what it returns, and the series it creates."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

import pool_exporter
from pool_exporter import metrics as m
from tests.support.exposition import scrape, value


def info(
    registry: CollectorRegistry,
    pool: str,
    pool_class: str,
    dialect: str,
    driver: str,
    **settings: str,
) -> float:
    """The value of the pool's `sqlalchemy_pool_info` series with exactly these labels: what the
    pool is and its settings, those of a default queue pool unless `settings` say otherwise."""
    defaults = {"pre_ping": "false", "reset_on_return": "rollback", "use_lifo": "false"}
    return value(
        registry,
        "sqlalchemy_pool_info",
        pool=pool,
        pool_class=pool_class,
        dialect=dialect,
        driver=driver,
        **{**defaults, **settings},
    )


def test_every_series_exists_at_zero_from_the_moment_of_instrumentation(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(
        sqlite_url, pool_size=3, max_overflow=4, pool_timeout=7, pool_recycle=3600
    )
    engines.append(engine)
    # route=: the series by route exist only for a pool counting them
    pool_exporter.instrument(engine, name="app", registry=registry, route=lambda: None)

    samples = scrape(registry)
    names = {name for name, _ in samples}
    for metric in m.ALL:
        expected = {
            "gauge": [metric.name],
            "counter": [metric.sample],
            "histogram": [f"{metric.name}_bucket", f"{metric.name}_count", f"{metric.name}_sum"],
            "info": [f"{metric.name}_info"],
        }[metric.kind]
        assert set(expected) <= names, metric.name
        # The generators select `metric.sample`: it must name a sample the exporter writes.
        assert metric.kind == "histogram" or metric.sample in names, metric.sample
    zero_at_start = [n for (n, labels) in samples.items() if n[0].endswith(("_total", "_count"))]
    assert zero_at_start and all(samples[k] == 0 for k in zero_at_start)
    assert value(registry, "sqlalchemy_pool_size", pool="app") == 3
    assert value(registry, "sqlalchemy_pool_max_overflow", pool="app") == 4
    assert value(registry, "sqlalchemy_pool_max_connections", pool="app") == 7
    assert value(registry, "sqlalchemy_pool_timeout_seconds", pool="app") == 7
    assert value(registry, "sqlalchemy_pool_recycle_seconds", pool="app") == 3600
    assert info(registry, "app", "QueuePool", "sqlite", "pysqlite") == 1


@pytest.mark.parametrize(
    ("poolclass", "url"),
    [
        (sa.pool.NullPool, "sqlite:///{tmp}/a.db"),
        (sa.pool.StaticPool, "sqlite://"),
        (sa.pool.SingletonThreadPool, "sqlite://"),
    ],
)
def test_pools_without_capacity_export_no_capacity(
    registry: CollectorRegistry, tmp_path: object, poolclass: type, url: str
) -> None:
    engine = sa.create_engine(url.format(tmp=tmp_path), poolclass=poolclass)
    pool_exporter.instrument(engine, name="p", registry=registry)
    with engine.connect() as conn:
        conn.exec_driver_sql("select 1")
        assert value(registry, "sqlalchemy_pool_connections", pool="p", state="in_use") == 1
    names = {name for name, _ in scrape(registry)}
    for metric in m.CAPACITY:
        assert metric.name not in names
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="p") == 1
    assert value(registry, "sqlalchemy_pool_connections", pool="p", state="in_use") == 0
    engine.dispose()


def test_nullpool_has_no_idle_connections_after_checkin(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    engine = sa.create_engine(sqlite_url, poolclass=sa.pool.NullPool)
    pool_exporter.instrument(engine, name="n", registry=registry)
    for _ in range(3):
        engine.connect().close()
    assert value(registry, "sqlalchemy_pool_connections", pool="n", state="idle") == 0
    assert value(registry, "sqlalchemy_pool_connects_total", pool="n") == 3
    # NullPool keeps no connection: each one returned to it is closed as overflow
    assert value(registry, "sqlalchemy_pool_closes_total", pool="n", reason="overflow") == 3


def test_async_engine_is_instrumented_through_its_sync_engine(
    registry: CollectorRegistry, aiosqlite_url: str
) -> None:
    import asyncio

    async def main() -> None:
        engine = create_async_engine(aiosqlite_url, pool_size=2, max_overflow=0)
        handle = pool_exporter.instrument(engine, name="a", registry=registry)
        assert handle.engine is engine.sync_engine
        async with engine.connect() as conn:
            await conn.exec_driver_sql("select 1")
        await engine.dispose()

    asyncio.run(main())
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="a") == 1
    # SQLite's own level, which the dialect read on the first connection
    level = {"isolation_level": "SERIALIZABLE"}
    assert info(registry, "a", "AsyncAdaptedQueuePool", "sqlite", "aiosqlite", **level) == 1


def test_instrumenting_adds_no_connection_or_dialect_events(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    # Any ConnectionEvents listener turns on the engine's per-statement event dispatch, a
    # DialectEvents one the dialect's: a cost on every statement of the application.
    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    pool_exporter.instrument(engine, name="quiet", registry=registry)
    with engine.connect() as conn:
        conn.exec_driver_sql("select 1")
    engine.dispose()
    assert engine._has_events is False
    assert engine.dialect._has_events is False


def test_instrumenting_twice_returns_the_same_handle_and_counts_once(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    first = pool_exporter.instrument(engine, name="x", registry=registry)
    assert pool_exporter.instrument(engine, registry=registry) is first
    assert pool_exporter.instrument(engine, name="x", registry=registry) is first
    engine.connect().close()
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="x") == 1
    with pytest.raises(ValueError, match="already instrumented as pool 'x'"):
        pool_exporter.instrument(engine, name="y", registry=registry)


def test_uninstrument_removes_hooks_wrapper_and_series(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    original_connect = engine.pool.connect
    handle = pool_exporter.instrument(engine, name="u", registry=registry)
    assert engine.pool.connect is not original_connect
    handle.uninstrument()
    assert "connect" not in vars(engine.pool)
    assert "dispose" not in vars(engine)
    assert handle.hooks.listeners["checkin"] is handle.hooks.on_checkin
    for identifier, listener in handle.hooks.listeners.items():
        assert not sa.event.contains(engine, identifier, listener), identifier
    assert not any(labels for (name, labels) in scrape(registry) if name.startswith("sqlalchemy_"))
    engine.connect().close()  # still works, and nothing is recorded
    assert handle.stats.checkouts == 0
    # instrumenting again after undoing works and starts from zero
    again = pool_exporter.instrument(engine, name="u", registry=registry)
    assert again is not handle
    engine.connect().close()
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool="u") == 1


@pytest.mark.parametrize(
    ("thing", "shown"),
    [
        ("sqlite://", "builtins.str"),
        (None, "builtins.NoneType"),
        (42, "builtins.int"),
    ],
)
def test_wrong_object_raises_type_error_naming_what_it_got(thing: object, shown: str) -> None:
    with pytest.raises(TypeError) as err:
        pool_exporter.instrument(thing)
    assert shown in str(err.value)
    assert "takes a sqlalchemy Engine or AsyncEngine" in str(err.value)


def test_session_and_pool_get_a_hint(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    with pytest.raises(TypeError, match=r"session.get_bind\(\)"):
        pool_exporter.instrument(Session(engine))
    with pytest.raises(TypeError, match="engine that owns the pool"):
        pool_exporter.instrument(engine.pool)
    engine.dispose()


def test_default_name_is_dialect_and_database_without_credentials() -> None:
    engine = sa.create_engine("postgresql+psycopg://quiz_user:s3cret@db.internal:6432/quiz")
    assert pool_exporter.default_name(engine) == "postgresql/quiz"
    assert pool_exporter.default_name(sa.create_engine("sqlite:////var/lib/app/data.db")) == (
        "sqlite/data.db"
    )
    assert pool_exporter.default_name(sa.create_engine("sqlite://")) == "sqlite/memory"


def test_default_names_are_made_unique_explicit_duplicates_are_refused(
    registry: CollectorRegistry, sqlite_url: str, engines: list[sa.Engine]
) -> None:
    a, b, c = (sa.create_engine(sqlite_url) for _ in range(3))
    engines.extend([a, b, c])
    assert pool_exporter.instrument(a, registry=registry).name == "sqlite/app.db"
    assert pool_exporter.instrument(b, registry=registry).name == "sqlite/app.db#2"
    with pytest.raises(ValueError, match="already instrumented"):
        pool_exporter.instrument(c, name="sqlite/app.db", registry=registry)


def test_password_never_reaches_labels_or_logs(
    registry: CollectorRegistry, caplog: pytest.LogCaptureFixture
) -> None:
    engine = sa.create_engine(
        "postgresql+psycopg://app:hunter2-secret@127.0.0.1:1/quiz",
        pool_timeout=0.1,
    )
    handle = pool_exporter.instrument(engine, registry=registry)
    with pytest.raises(sa.exc.OperationalError):
        engine.connect()  # the database refuses: counted under the credential-free name
    assert value(registry, "sqlalchemy_pool_connect_errors_total", pool="postgresql/quiz") == 1
    # force a failure inside the hook, so the exporter logs something about this pool
    handle.stats.timeouts = None  # type: ignore[assignment]  # makes the next failure raise
    handle.stats.connect_errors = None  # type: ignore[assignment]
    with caplog.at_level(logging.DEBUG), pytest.raises(sa.exc.OperationalError):
        engine.connect()
    assert "TypeError" in caplog.text
    handle.stats.timeouts = handle.stats.connect_errors = 0
    assert (
        value(registry, "pool_exporter_hook_errors_total", pool="postgresql/quiz", hook="checkout")
        == 1
    )
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("pool_exporter")]
    text = "\n".join([*(str(k) for k in scrape(registry)), *ours])
    assert "hunter2" not in text and "127.0.0.1" not in text and "app:" not in text


def test_plugin_route_instruments_at_create_engine(sqlite_url: str) -> None:
    from prometheus_client import REGISTRY

    engine = sa.create_engine(
        sqlite_url + "?pool_exporter_name=plugin-test", plugins=["pool_exporter"]
    )
    assert "pool_exporter_name" not in str(engine.url)
    with engine.connect() as conn:
        conn.exec_driver_sql("select 1")
    assert (
        REGISTRY.get_sample_value("sqlalchemy_pool_checkouts_total", {"pool": "plugin-test"}) == 1
    )
    pool_exporter.instrument(engine).uninstrument()
    engine.dispose()


def test_promtool_accepts_the_exposition(
    registry: CollectorRegistry, sqlite_url: str, promtool: str, engines: list[sa.Engine]
) -> None:
    import subprocess

    from prometheus_client import generate_latest

    engine = sa.create_engine(sqlite_url)
    engines.append(engine)
    pool_exporter.instrument(engine, name="app", registry=registry)
    engine.connect().close()
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=generate_latest(registry),
        capture_output=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


def test_an_engine_whose_dialect_lacks_driver_and_dbapi_is_instrumented_with_empty_labels(
    registry: CollectorRegistry, tmp_path: object
) -> None:
    # As SQLAlchemy's own test suites build some engines: a bare DefaultDialect has no
    # `driver`, and its `loaded_dbapi` raises InvalidRequestError (not AttributeError).
    import sqlite3

    from sqlalchemy.engine.default import DefaultDialect

    dialect = DefaultDialect()
    assert not hasattr(dialect, "driver")
    pool = sa.pool.QueuePool(lambda: sqlite3.connect(":memory:"), pool_size=2)
    engine = sa.engine.Engine(pool, dialect, sa.make_url("sqlite://"))
    handle = pool_exporter.instrument(engine, registry=registry)
    assert handle.name == "sqlite/memory"
    labels = {"pool": handle.name, "pool_class": "QueuePool", "dialect": "default", "driver": ""}
    settings = {"pre_ping": "false", "reset_on_return": "rollback", "use_lifo": "false"}
    assert value(registry, "sqlalchemy_pool_info", **labels, **settings) == 1
    with engine.connect():
        assert value(registry, "sqlalchemy_pool_connections", pool=handle.name, state="in_use") == 1
    assert value(registry, "sqlalchemy_pool_checkouts_total", pool=handle.name) == 1
    errors = [
        v for (name, _), v in scrape(registry).items() if name == "pool_exporter_hook_errors_total"
    ]
    assert errors and not any(errors)
