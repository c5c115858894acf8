"""Shared fixtures: fresh registries, real databases, engines disposed, the promtool binary.
Helpers live in tests/support/: no test module imports this one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from .support.binaries import require_binary

PG_URL = os.environ.get(
    "POOL_EXPORTER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """In a parallel run (pytest-xdist, `--dist loadscope`: a module is one unit of work, so
    a module-scoped fixture such as a Prometheus fed a workload or a built wheel is made once),
    each worker takes the modules with slow tests first, so that no long module is left to run
    alone at the end. A serial run keeps the modules' order."""
    if hasattr(config, "workerinput"):
        slow = {_module(item) for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: _module(item) not in slow)  # stable: a module stays whole


def _module(item: pytest.Item) -> str:
    return item.nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test marked `root` fails at once, saying why, when the suite runs as another user:
    a skip would pass a run that never tried it (CI runs as root)."""
    if item.get_closest_marker("root") is not None and os.geteuid() != 0:
        pytest.fail(
            f"{item.name} needs root (it mounts a file system); run the suite as root, or "
            "leave these tests out with -m 'not root'",
            pytrace=False,
        )


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def sqlite_url(tmp_path: object) -> str:
    return f"sqlite:///{tmp_path}/app.db"


@pytest.fixture
def aiosqlite_url(tmp_path: object) -> str:
    return f"sqlite+aiosqlite:///{tmp_path}/app.db"


@pytest.fixture(scope="session")
def pg_url() -> str:
    """The real PostgreSQL; a run without it fails with a hint instead of skipping."""
    engine = sa.create_engine(PG_URL, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("select 1")
    except Exception as exc:
        pytest.fail(
            f"PostgreSQL is required on 127.0.0.1:5432 (set POOL_EXPORTER_TEST_PG to use "
            f"another): {type(exc).__name__}",
            pytrace=False,
        )
    finally:
        engine.dispose()
    return PG_URL


@pytest.fixture
def pg_app_name() -> str:
    """A unique application_name, so a test can find its own backends in pg_stat_activity."""
    return f"pool-exporter-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """The name of a database of the test's own on the shared server, dropped (with any
    connection left in it) at the end: what a test counts in it is only its own, whatever other
    tests and other users of the server do meanwhile."""
    name = f"pool_exporter_test_{uuid.uuid4().hex[:10]}"
    admin = pg_url.replace("postgresql+psycopg://", "postgresql://").rsplit("/", 1)[0]
    with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool")


@pytest.fixture
def engines() -> Iterator[list[sa.Engine]]:
    """Engines a test creates; disposed at the end."""
    made: list[sa.Engine] = []
    yield made
    for engine in made:
        engine.dispose()
