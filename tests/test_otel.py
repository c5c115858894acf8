"""pool_exporter.otel: the pool's counts as OpenTelemetry observable instruments, equal to the
Prometheus samples, read through a real SDK MeterProvider and its InMemoryMetricReader."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from opentelemetry.metrics import (
    Counter,
    ObservableCounter,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.semconv._incubating.metrics import db_metrics
from opentelemetry.semconv.schemas import Schemas
from prometheus_client import CollectorRegistry

import pool_exporter
from pool_exporter import metrics as m
from pool_exporter import otel
from pool_exporter.instrument import PoolInstrumentation
from tests.support.exposition import scrape
from tests.support.procs import wait_until

ROOT = Path(__file__).resolve().parent.parent

Points = dict[tuple[str, tuple[tuple[str, str], ...]], int | float]


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    """A real SDK MeterProvider of the test's own, enabled, read in memory."""
    found = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[found])
    otel.enable(provider)
    yield found
    provider.shutdown()


@pytest.fixture
def instrument(registry: CollectorRegistry) -> Iterator[Callable[..., PoolInstrumentation]]:
    """instrument() into the test's registry; each pool uninstrumented and its engine disposed
    at the end, so that no other test's collection sees it. The names start with `otel-`:
    other tests' pools may still be instrumented in this process under names like `app`."""
    made: list[tuple[PoolInstrumentation, sa.Engine]] = []

    def make(
        engine: sa.Engine, name: str, into: CollectorRegistry | None = None
    ) -> PoolInstrumentation:
        handle = pool_exporter.instrument(engine, name=name, registry=into or registry)
        made.append((handle, engine))
        return handle

    yield make
    for handle, engine in made:
        handle.uninstrument()
        engine.dispose()


def collect(reader: InMemoryMetricReader) -> Points:
    """Every data point one collection gives: (instrument, sorted attributes) -> value."""
    points: Points = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data is not None else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for point in metric.data.data_points:  # type: ignore[union-attr]
                    key = (metric.name, tuple(sorted((point.attributes or {}).items())))
                    points[key] = point.value  # type: ignore[union-attr]
    return points


def of_pool(points: Points, pool: str) -> Points:
    """The points of one pool (other tests' pools may still be instrumented in this process)."""
    return {k: v for k, v in points.items() if (otel.POOL_NAME, pool) in k[1]}


def expected_from_prometheus(registry: CollectorRegistry, pool: str) -> Points:
    """What each instrument should say about `pool`, from the Prometheus exposition: the same
    numbers, less what an integer instrument cannot say (an unbounded pool's +Inf, the
    pool_size 0 that means no limit)."""
    samples = scrape(registry)
    has_capacity = (m.SIZE.sample, (("pool", pool),)) in samples
    out: Points = {}
    for spec in otel.INSTRUMENTS:
        if spec.prometheus is None:  # idle.min: QueuePool keeps no minimum
            if has_capacity:
                out[(spec.name, attrs(pool))] = 0
            continue
        states = otel.PROMETHEUS_STATE.items() if spec.prometheus is m.CONNECTIONS else [("", "")]
        for state, label in states:
            labels = {"pool": pool} | ({"state": label} if label else {})
            value = samples.get((spec.prometheus.sample, tuple(sorted(labels.items()))))
            if value is None or value == float("inf") or (spec.prometheus is m.SIZE and not value):
                continue
            out[(spec.name, attrs(pool, state))] = value
    return out


def test_each_instrument_equals_the_prometheus_sample_with_connections_used_idle_and_waiting(
    reader: InMemoryMetricReader,
    registry: CollectorRegistry,
    sqlite_url: str,
    tmp_path: Path,
    instrument: Callable[..., PoolInstrumentation],
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=2, max_overflow=1, pool_timeout=30)
    handle = instrument(engine, "otel-app")
    # A second pool whose callers time out at once, so the timeouts counter has counted.
    brief = sa.create_engine(f"sqlite:///{tmp_path}/brief.db", pool_size=1, max_overflow=0,
                             pool_timeout=0.05)  # fmt: skip
    instrument(brief, "otel-brief")
    out: list[sa.Connection] = []
    waiters = [threading.Thread(target=lambda: engine.connect().close()) for _ in range(2)]
    try:
        with brief.connect(), pytest.raises(sa.exc.TimeoutError):
            brief.connect()

        # in use and idle: three out (one of them overflow), then two back into the pool
        out += [engine.connect() for _ in range(3)]
        out.pop().close()
        out.pop().close()
        points = collect(reader)
        assert of_pool(points, "otel-app") == expected_from_prometheus(registry, "otel-app")
        assert points[("db.client.connection.count", app("used"))] == 1
        assert points[("db.client.connection.count", app("idle"))] == 2

        # waiting: the pool full (2 + 1) and two callers queued behind it
        out += [engine.connect() for _ in range(2)]
        for t in waiters:
            t.start()
        wait_until(lambda: handle.stats.waiting == 2, what="two callers waiting")
        points = collect(reader)
        assert of_pool(points, "otel-app") == expected_from_prometheus(registry, "otel-app")
        assert points[("db.client.connection.count", app("used"))] == 3
        assert points[("db.client.connection.pending_requests", app())] == 2
        assert points[("db.client.connection.max", app())] == 3
        assert points[("db.client.connection.idle.max", app())] == 2
        assert points[("db.client.connection.idle.min", app())] == 0
        assert of_pool(points, "otel-brief") == expected_from_prometheus(registry, "otel-brief")
        assert points[("db.client.connection.timeouts", attrs("otel-brief"))] == 1
    finally:
        for conn in out:
            conn.close()
        for t in waiters:
            if t.is_alive() or t.ident is not None:
                t.join(10)
    assert not any(t.is_alive() for t in waiters)
    points = collect(reader)
    assert of_pool(points, "otel-app") == expected_from_prometheus(registry, "otel-app")
    assert points[("db.client.connection.pending_requests", app())] == 0


def attrs(pool: str, state: str = "") -> tuple[tuple[str, str], ...]:
    found = {otel.POOL_NAME: pool} | ({otel.STATE: state} if state else {})
    return tuple(sorted(found.items()))


def app(state: str = "") -> tuple[tuple[str, str], ...]:
    return attrs("otel-app", state)


def test_pools_instrumented_after_enable_show_up_and_uninstrumented_ones_go(
    reader: InMemoryMetricReader,
    registry: CollectorRegistry,
    sqlite_url: str,
    instrument: Callable[..., PoolInstrumentation],
) -> None:
    assert of_pool(collect(reader), "otel-late") == {}
    engine = sa.create_engine(sqlite_url, pool_size=4)
    handle = instrument(engine, "otel-late")
    with engine.connect():
        points = collect(reader)
        assert points[("db.client.connection.count", attrs("otel-late", "used"))] == 1
        assert of_pool(points, "otel-late") == expected_from_prometheus(registry, "otel-late")
    handle.uninstrument()
    assert of_pool(collect(reader), "otel-late") == {}


@pytest.mark.parametrize(
    ("poolclass", "url"),
    [(sa.pool.NullPool, "{file}"), (sa.pool.StaticPool, "sqlite://")],
)
def test_pools_without_capacity_report_their_counts_and_no_limits(
    reader: InMemoryMetricReader,
    sqlite_url: str,
    poolclass: type[sa.pool.Pool],
    url: str,
    instrument: Callable[..., PoolInstrumentation],
) -> None:
    engine = sa.create_engine(url.format(file=sqlite_url), poolclass=poolclass)
    handle = instrument(engine, "otel-nocap")
    with engine.connect():
        points = of_pool(collect(reader), "otel-nocap")
        assert points == expected_from_prometheus(handle.registry, "otel-nocap")
    assert {name for name, _ in points} == {
        "db.client.connection.count",
        "db.client.connection.pending_requests",
        "db.client.connection.timeouts",
    }
    assert points[("db.client.connection.count", attrs("otel-nocap", "used"))] == 1


def test_an_unbounded_pool_leaves_out_the_limits_it_does_not_have(
    reader: InMemoryMetricReader,
    registry: CollectorRegistry,
    sqlite_url: str,
    instrument: Callable[..., PoolInstrumentation],
) -> None:
    engine = sa.create_engine(sqlite_url, pool_size=0, max_overflow=-1)
    instrument(engine, "otel-open")
    points = of_pool(collect(reader), "otel-open")
    # +Inf in Prometheus; an integer instrument has no such value, so none is made up
    assert ("db.client.connection.max", attrs("otel-open")) not in points
    assert ("db.client.connection.idle.max", attrs("otel-open")) not in points
    assert points[("db.client.connection.idle.min", attrs("otel-open"))] == 0
    assert points == expected_from_prometheus(registry, "otel-open")


def test_names_units_and_schema_are_those_of_the_semantic_conventions_release(
    reader: InMemoryMetricReader,
    registry: CollectorRegistry,
    sqlite_url: str,
    instrument: Callable[..., PoolInstrumentation],
) -> None:
    engine = sa.create_engine(sqlite_url)
    instrument(engine, "otel-names")
    constants = {value for key, value in vars(db_metrics).items() if key.isupper()}
    assert {spec.name for spec in otel.INSTRUMENTS} <= constants
    assert otel.SCHEMA_URL in {schema.value for schema in Schemas}
    data = reader.get_metrics_data()
    assert data is not None
    [scope] = [
        sm for rm in data.resource_metrics for sm in rm.scope_metrics if sm.scope.name == otel.SCOPE
    ]
    assert scope.schema_url == scope.scope.schema_url == otel.SCHEMA_URL
    units = {metric.name: metric.unit for metric in scope.metrics}
    assert units == {spec.name: spec.unit for spec in otel.INSTRUMENTS}
    # What the semantic-conventions package's own factories make, kind for kind
    conventions = MeterProvider().get_meter("semconv")
    ours = otel.enable(MeterProvider()).instruments
    for spec in otel.INSTRUMENTS:
        theirs = getattr(db_metrics, f"create_{spec.name.replace('.', '_')}")(conventions)
        mine = ours[spec.name]
        assert (mine.name, mine.unit, mine.description) == (  # type: ignore[attr-defined]
            theirs.name,
            theirs.unit,
            theirs.description,
        )
        kind = {Counter: ObservableCounter, UpDownCounter: ObservableUpDownCounter}
        assert [isinstance(mine, kind[k]) for k in kind] == [isinstance(theirs, k) for k in kind]


def test_enable_returns_the_same_object_for_a_provider_and_names_what_else_it_got() -> None:
    provider = MeterProvider()
    try:
        assert otel.enable(provider) is otel.enable(provider)
        assert otel.enable(provider).meter_provider is provider
        for wrong, hint in [
            ("MeterProvider()", ""),
            (provider.get_meter("app"), "pass the MeterProvider the meter came from"),
            (InMemoryMetricReader(), "pass a MeterProvider(metric_readers=[reader])"),
        ]:
            with pytest.raises(TypeError) as caught:
                otel.enable(wrong)  # type: ignore[arg-type]
            message = str(caught.value)
            assert message.startswith("enable() takes an opentelemetry.metrics.MeterProvider")
            assert f"got {type(wrong).__module__}.{type(wrong).__qualname__}" in message
            assert hint in message and "\n" not in message
    finally:
        provider.shutdown()


def test_a_pool_that_cannot_be_read_is_left_out_and_logged_once_and_the_others_stay(
    reader: InMemoryMetricReader,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    instrument: Callable[..., PoolInstrumentation],
) -> None:
    # a registry of its own: its Prometheus scrape would fail the same way
    handle = instrument(sa.create_engine(sqlite_url), "otel-broken", CollectorRegistry())
    fine = instrument(sa.create_engine("sqlite://"), "otel-fine")

    def fail() -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(handle.stats, "snapshot", fail)
    with caplog.at_level(logging.DEBUG, logger="pool_exporter"):
        for _ in range(2):
            points = collect(reader)
            assert of_pool(points, "otel-broken") == {}
            assert of_pool(points, "otel-fine") == expected_from_prometheus(
                fine.registry, "otel-fine"
            )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    # once with its traceback; every later reading of it (six instruments, two collections)
    # at debug level
    [warning] = warnings
    assert "'otel-broken'" in warning.getMessage()
    assert "RuntimeError: injected" in warning.getMessage()
    debug = [
        r for r in caplog.records if r.levelno == logging.DEBUG and "otel-broken" in r.msg % r.args
    ]
    assert len(debug) == 2 * len(otel.INSTRUMENTS) - 1


def test_two_pools_of_one_name_in_different_registries_give_one_series_and_a_warning(
    reader: InMemoryMetricReader,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
    instrument: Callable[..., PoolInstrumentation],
) -> None:
    first = instrument(sa.create_engine(sqlite_url), "otel-twice")
    other = sa.create_engine(sqlite_url.replace("app.db", "other.db"))
    second = instrument(other, "otel-twice", CollectorRegistry())
    assert first.name == second.name
    with caplog.at_level(logging.WARNING, logger="pool_exporter"):
        points = of_pool(collect(reader), "otel-twice")
    # one series per instrument (two for count), not two pools' numbers under one attribute set
    assert len(points) == len(otel.INSTRUMENTS) + 1
    [warning] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert "'otel-twice'" in warning.getMessage() and "distinct name=" in warning.getMessage()


def run_python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def test_import_pool_exporter_imports_no_opentelemetry() -> None:
    result = run_python(
        "import sys, pool_exporter, pool_exporter.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))"
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_without_the_api_installed_the_import_error_is_one_line_naming_the_extra() -> None:
    # As if opentelemetry were not installed (tests/test_wheel.py checks a real venv without it)
    result = run_python(
        "import sys; sys.modules['opentelemetry'] = None; import pool_exporter.otel"
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last == (
        "ImportError: pool_exporter.otel needs OpenTelemetry's API: "
        "pip install 'pool-exporter[otel]'"
    )
    assert "During handling" not in result.stderr


GLOBAL_PROVIDER = """
import json, tempfile
import sqlalchemy as sa
from opentelemetry import metrics
from opentelemetry.metrics import (
    Counter,
    ObservableCounter,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
import pool_exporter
from pool_exporter import otel

otel.enable()  # before the application sets its provider: the API's proxy forwards later
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
engine = sa.create_engine(f"sqlite:///{tempfile.mkdtemp()}/g.db")
pool_exporter.instrument(engine, name="global")
with engine.connect():
    data = reader.get_metrics_data()
print(json.dumps([
    [m.name, dict(p.attributes), p.value]
    for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    for p in m.data.data_points
]))
"""


def test_enable_without_a_provider_reports_to_the_global_one_set_even_later() -> None:
    result = run_python(GLOBAL_PROVIDER)
    assert result.returncode == 0, result.stderr
    points = {(name, tuple(sorted(a.items()))): v for name, a, v in json.loads(result.stdout)}
    assert points[("db.client.connection.count", attrs("global", "used"))] == 1
    assert points[("db.client.connection.count", attrs("global", "idle"))] == 0
    assert points[("db.client.connection.max", attrs("global"))] == 15


MULTIPROCESS = """
import json, os, sys
import sqlalchemy as sa
from opentelemetry.metrics import (
    Counter,
    ObservableCounter,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
import pool_exporter
from pool_exporter import otel
from tests.support.forking import in_child

reader = InMemoryMetricReader()
otel.enable(MeterProvider(metric_readers=[reader]))
engine = sa.create_engine(sys.argv[1], pool_size=5)
handle = pool_exporter.instrument(engine, name="otel-app")
assert type(handle.stats).__name__.endswith("MultiprocessPoolStats"), type(handle.stats)


def seen():
    data = reader.get_metrics_data()
    [rm] = data.resource_metrics
    points = {
        m.name + "/" + p.attributes.get(otel.STATE, ""): p.value
        for sm in rm.scope_metrics for m in sm.metrics for p in m.data.data_points
        if p.attributes[otel.POOL_NAME] == "otel-app"
    }
    return {"points": points, "instance": rm.resource.attributes["service.instance.id"]}


def child():
    held = [engine.connect(), engine.connect()]
    return seen()


held = engine.connect()
print(json.dumps({"child": in_child(child), "parent": seen()}))
"""


def test_in_multiprocess_mode_each_process_reports_its_own_pools(tmp_path: Path) -> None:
    mp_dir = tmp_path / "mp"
    mp_dir.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", MULTIPROCESS, f"sqlite:///{tmp_path}/mp.db"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env={**__import__("os").environ, "PROMETHEUS_MULTIPROC_DIR": str(mp_dir)},
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    # The parent holds one connection, its forked worker two: each reports its own, never
    # the other's (the sidecar merges the workers for Prometheus; an OTLP backend sums them).
    assert found["parent"]["points"]["db.client.connection.count/used"] == 1
    assert found["child"]["points"]["db.client.connection.count/used"] == 2
    assert found["child"]["points"]["db.client.connection.count/idle"] == 0
    # The SDK gives the forked worker an instance id of its own, so the series stay apart.
    assert found["child"]["instance"] != found["parent"]["instance"]


def test_the_collector_config_in_the_docs_scrapes_with_a_valid_prometheus_configuration(
    promtool: str, tmp_path: Path
) -> None:
    page = (ROOT / "docs" / "opentelemetry.md").read_text()
    section = page.split("## The Collector scraping the sidecar", 1)[1]
    block = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    config = yaml.safe_load(block)
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline["receivers"] == ["prometheus"]
    assert set(pipeline["exporters"]) <= set(config["exporters"])
    assert set(pipeline["processors"]) <= set(config["processors"])
    scrape = tmp_path / "prometheus.yml"
    scrape.write_text(yaml.safe_dump(config["receivers"]["prometheus"]["config"]))
    result = subprocess.run(
        [promtool, "check", "config", "--syntax-only", str(scrape)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    [job] = config["receivers"]["prometheus"]["config"]["scrape_configs"]
    assert job["static_configs"][0]["targets"] == ["127.0.0.1:9653"]
