"""Shared fixtures: fresh registries, real databases, scraping and the promtool binary."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

PG_URL = os.environ.get(
    "POOL_EXPORTER_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PG_ASYNC_URL = PG_URL  # psycopg 3 serves both create_engine and create_async_engine


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


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is required: apt-get install prometheus prometheus-alertmanager",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def promtool() -> str:
    return require_binary("promtool")


def scrape(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the registry's exposition, parsed back with prometheus-client's parser."""
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """One sample's value from the parsed exposition; fails if the series does not exist."""
    key = (name, tuple(sorted(labels.items())))
    samples = scrape(registry)
    assert key in samples, (
        f"no series {name}{labels}; have {sorted(k for k in samples if k[0] == name)}"
    )
    return samples[key]


@pytest.fixture
def engines() -> Iterator[list[sa.Engine]]:
    """Engines a test creates; disposed at the end."""
    made: list[sa.Engine] = []
    yield made
    for engine in made:
        engine.dispose()
