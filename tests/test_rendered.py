"""The sidecar's fast exposition writes what prometheus-client's own exposition writes for the
same files: every negotiated format, with and without `?name[]=`, label values that need
escaping included."""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om_parse
from prometheus_client.parser import text_string_to_metric_families as text_parse
from prometheus_client.utils import floatToGoString

from pool_exporter import rendered
from pool_exporter.multiprocess.reader import WorkersCollector
from pool_exporter.namefilter import NameFilter
from pool_exporter.rendered import Exposed, encode, format_value, make_rendering_wsgi_app

# Pools with and without capacity, names that need escaping, and an application's own
# prometheus-client counter between them in the directory. With TRACED set, every checkout
# runs inside a sampled span with exemplars on, so each pool's wait histogram has one.
WRITER = r"""
import contextlib, os, sys
import sqlalchemy as sa
from sqlalchemy.pool import QueuePool
from prometheus_client import Counter
from pool_exporter import instrument

span = lambda: contextlib.nullcontext()
if os.environ.get("TRACED"):
    from opentelemetry.sdk.trace import TracerProvider
    import pool_exporter.otel
    pool_exporter.otel.enable_exemplars(min_wait=0.0)
    span = lambda: TracerProvider().get_tracer("writer").start_as_current_span("request")

names = ['plain', 'quote"back\\slash', 'new\nline', 'ünï\u2028x', 'a b']
engines = []
for n, name in enumerate(names):
    kw = {"poolclass": QueuePool, "pool_size": 2 + n} if n % 2 == 0 else {}
    engine = sa.create_engine("sqlite://", **kw)
    instrument(engine, name=name)
    with span(), engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    engines.append(engine)
Counter("app_requests", "Requests served.").inc(3)
if os.fork() == 0:
    with span(), engines[0].connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    os.write(1, b"ready\n")
    sys.stdin.read()
    os._exit(0)
os.write(1, b"ready\n")
sys.stdin.read()
"""

ACCEPT = [
    "",
    "text/plain; version=0.0.4",
    "text/plain; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text; version=1.0.0",
    "application/openmetrics-text; version=1.0.0; escaping=allow-utf-8",
    "application/openmetrics-text",
    # An escaping that changes our names (`_` becomes `__`): the cached lines are the
    # encoder's own, so they change with it.
    "application/openmetrics-text; version=1.0.0; escaping=dots",
]
# The one line that differs from scrape to scrape: how long the scrape took (its name as any
# escaping writes it).
DURATION = "pool_exporter_multiprocess_scrape_duration_seconds "


@pytest.fixture(params=["", "traced"])
def directory(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Path]:
    """The writer's directory: without exemplars, and with one on each pool's wait histogram."""
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "TRACED": request.param},
    )
    assert writer.stdout is not None and writer.stdin is not None
    try:
        assert [writer.stdout.readline(), writer.stdout.readline()] == [b"ready\n"] * 2
        yield tmp_path
    finally:
        writer.stdin.close()
        writer.wait(10)


def steady(body: bytes) -> str:
    lines = body.decode().splitlines(keepends=True)
    return "".join(line for line in lines if not line.replace("__", "_").startswith(DURATION))


def parsed(
    text: str, openmetrics: bool
) -> list[tuple[str, str, tuple[tuple[str, str], ...], float]]:
    families = om_parse(text) if openmetrics else text_parse(text)
    return sorted(
        (f.name, s.name, tuple(sorted(s.labels.items())), s.value)
        for f in families
        for s in f.samples
    )


@pytest.mark.parametrize("accept", ACCEPT)
def test_fast_exposition_equals_prometheus_clients_byte_for_byte(
    directory: Path, accept: str, request: pytest.FixtureRequest
) -> None:
    workers = WorkersCollector(str(directory))
    registry = CollectorRegistry()
    registry.register(workers)
    # Beside them, what the encoder writes in more than one line per sample in order: a
    # counter's _created (moved to a family of its own in the text format), an exemplar.
    own = CollectorRegistry()
    Counter("served", "Served.", ["path"], registry=own).labels('/a"b').inc(exemplar={"t": "1"})
    Histogram("took_seconds", "Took.", registry=own, buckets=(0.1, 1.0)).observe(0.5)
    registry.register(own)
    exposed = Exposed(workers, own)
    encoder, content_type = choose_encoder(accept)
    for _ in range(2):  # the second from the cached lines
        fast, reference = steady(encode(exposed, encoder)), steady(encoder(registry))
        assert fast == reference
    assert fast == reference
    if "dots" in accept:
        return  # prometheus-client's parser refuses its own dots output (`__bucket` clashes)
    openmetrics = content_type.startswith("application/openmetrics-text")
    samples = parsed(fast, openmetrics)
    assert samples == parsed(reference, openmetrics)
    # What is compared is the real thing: both workers, every pool, the escaped names.
    info = [s for s in samples if s[1] == "sqlalchemy_pool_info"]
    assert len(info) == 10
    assert {dict(s[2])["pool"] for s in info} == {
        "plain",
        'quote"back\\slash',
        "new\nline",
        "ünï\u2028x",
        "a b",
    }
    assert {dict(s[2])["worker"] for s in info} == {"0", "1"}
    assert any(s[0] == "app_requests" for s in samples)
    if openmetrics:  # an exemplar on every pool's wait histogram, or on none
        with_exemplars = {
            s.labels["pool"]
            for f in om_parse(fast)
            for s in f.samples
            if s.name == "sqlalchemy_pool_checkout_wait_seconds_bucket" and s.exemplar
        }
        traced = request.node.callspec.params["directory"] == "traced"
        assert len(with_exemplars) == (5 if traced else 0)


@pytest.mark.parametrize("accept", ACCEPT[:4])
def test_name_filter_keeps_what_prometheus_clients_filter_keeps(
    directory: Path, accept: str
) -> None:
    workers = WorkersCollector(str(directory))
    encoder, _ = choose_encoder(accept)
    names = frozenset(
        {
            "sqlalchemy_pool_connections",  # a rendered family, by family name
            "sqlalchemy_pool_info",  # a rendered family, by sample name
            "sqlalchemy_pool_checkouts_total",  # a counter, by sample name
            "app_requests",  # the application's own, by family name
        }
    )
    fast = steady(encode(Exposed(workers), encoder, names))
    reference = steady(encoder(NameFilter(workers).restricted_registry(names)))
    assert fast == reference
    assert fast.count("sqlalchemy_pool_connections{") == 20
    assert fast.count("sqlalchemy_pool_info{") == 10
    assert "sqlalchemy_pool_waiting_checkouts" not in fast


def test_wsgi_app_negotiates_and_compresses_as_prometheus_clients(directory: Path) -> None:
    app = make_rendering_wsgi_app(Exposed(WorkersCollector(str(directory))))
    answered: list[tuple[str, dict[str, str]]] = []
    environ = {
        "REQUEST_METHOD": "GET",
        "QUERY_STRING": "name[]=sqlalchemy_pool_size",
        "HTTP_ACCEPT": "application/openmetrics-text; version=1.0.0",
        "HTTP_ACCEPT_ENCODING": "gzip",
    }
    body = b"".join(app(environ, lambda status, headers: answered.append((status, dict(headers)))))
    status, headers = answered[0]
    assert status == "200 OK"
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Content-Type"].startswith("application/openmetrics-text; version=1.0.0")
    samples = parsed(gzip.decompress(body).decode(), openmetrics=True)
    assert {s[1] for s in samples} == {"sqlalchemy_pool_size"}
    assert sorted(s[3] for s in samples) == [2.0, 2.0, 4.0, 4.0, 6.0, 6.0]
    answered.clear()
    app({**environ, "REQUEST_METHOD": "POST"}, lambda s, h: answered.append((s, dict(h))))
    assert answered[0][0] == "405 Method Not Allowed"


@pytest.mark.parametrize(
    "value", [0, 0.0, -0.0, 1, 30.0, 4095, 4096.0, 1e20, float("inf"), float("nan"), 0.5, -1, True]
)
def test_a_value_is_written_as_prometheus_client_writes_it(value: float) -> None:
    assert format_value(value) == floatToGoString(value)


def test_a_line_the_cache_cannot_cut_is_served_by_prometheus_client_whole(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A prometheus-client whose sample lines took another shape: the scrape still answers.
    workers = WorkersCollector(str(directory))
    registry = CollectorRegistry()
    registry.register(workers)

    def uncut(self: rendered.Format, family: object) -> str:
        raise rendered._Uncut("another shape")

    monkeypatch.setattr(rendered.Format, "prefix", uncut)
    assert steady(encode(Exposed(workers), generate_latest)) == steady(generate_latest(registry))
