"""`pool-exporter demo`: the push incident, replayed on an embedded SQLite pool.

An instrumented engine at SQLAlchemy's defaults (pool_size 5, max_overflow 10, pool_timeout
30 s) serves steady traffic; then a push brings 2,000 users within three seconds, each holding
a connection for about as long as a web request does (median 0.3 s, p95 1.2 s). Fifteen
connections serve about 35 requests a second, so the push queues for minutes and every
caller still waiting after 30 s gets "QueuePool limit of size 5 overflow 10 reached".
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from prometheus_client.registry import CollectorRegistry
from sqlalchemy import exc as sa_exc

from pool_exporter import redact
from pool_exporter.errors import CliError
from pool_exporter.exposition import start_http_server
from pool_exporter.instrument import instrument
from pool_exporter.mixin import data_files

from . import replay as rp
from .alertwatch import AlertTimes, AlertWatch
from .arguments import add_pool_arguments, add_push_arguments
from .holds import HoldTime
from .liveview import LiveView
from .results import Result
from .timeline import Marker, can_plot, plot

DEFAULT_PORT = 9464
POOL_NAME = "demo"
ENV_URLS = ("POOL_EXPORTER_DATABASE_URL", "DATABASE_URL")
HOLD = HoldTime(0.3, 1.2)
BACKGROUND_RATE = 10.0  # about 30 % of the 15 connections before the push


def configure(parser: argparse.ArgumentParser) -> None:
    add_push_arguments(parser)
    add_pool_arguments(parser, timeout_help=", SQLAlchemy's default, as in the incident")
    parser.add_argument(
        "--duration",
        type=float,
        default=60.0,
        help="seconds of steady traffic; the push starts a quarter of the way in, at most "
        "15 s (60)",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("pool-exporter-demo.png"), help="the timeline PNG"
    )
    parser.add_argument(
        "--database-url",
        default=next((os.environ[v] for v in ENV_URLS if os.environ.get(v)), None),
        help="database to use instead of a temporary SQLite file (default from "
        "$POOL_EXPORTER_DATABASE_URL or $DATABASE_URL)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=DEFAULT_PORT,
        help=f"serve /metrics on 127.0.0.1:PORT, or a free port if it is taken ({DEFAULT_PORT})",
    )
    parser.add_argument(
        "--no-prometheus",
        action="store_true",
        help="do not start a Prometheus server to evaluate the alert rules",
    )
    parser.add_argument(
        "--rules",
        type=Path,
        help="alert rules to evaluate (default: ./alerts/pool-exporter.rules.yml if there is "
        "one, else the default rules shipped with the package)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the replay's results as JSON")


def serve_metrics(registry: CollectorRegistry, port: int) -> tuple[Any, int]:
    """prometheus-client's server on loopback; a free port when `port` is taken."""
    try:
        server, _ = start_http_server(port, "127.0.0.1", registry)
    except OSError:
        server, _ = start_http_server(0, "127.0.0.1", registry)
    return server, int(server.server_port)


class Interrupt:
    """The first Ctrl-C stops the run (the summary still comes); a second one exits."""

    def __init__(self) -> None:
        self.runner: rp.Replay | None = None
        self.hit = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupt]:
        previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.hit:
            raise KeyboardInterrupt
        self.hit = True
        print("\nstopping: Ctrl-C again to exit at once", file=sys.stderr, flush=True)
        if self.runner is not None:
            self.runner.cancel()


def run(args: argparse.Namespace) -> int:
    push_at = min(15.0, args.duration / 4)
    try:
        scenario = rp.Scenario(
            users=args.users,
            ramp=args.ramp,
            hold=HOLD,
            background_rate=BACKGROUND_RATE,
            duration=args.duration,
            push_at=push_at,
        )
        settings = rp.PoolSettings(args.pool_size, args.max_overflow, args.pool_timeout)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    interrupt = Interrupt()
    with interrupt.installed(), contextlib.ExitStack() as stack:
        try:
            engine, _ = stack.enter_context(rp.pool_engine(args.database_url, settings))
        except (sa_exc.ArgumentError, redact.MalformedUrl, rp.DatabaseUnavailable) as exc:
            raise CliError(f"--database-url: {redact.text(str(exc))}") from None
        registry = CollectorRegistry()
        handle = instrument(engine, name=POOL_NAME, registry=registry)
        stack.callback(handle.uninstrument)
        server, port = serve_metrics(registry, args.port)
        stack.callback(server.shutdown)
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        where = "a temporary SQLite file" if args.database_url is None else "the database"
        print(f"pool-exporter demo on {where}: {redact.url(engine.url)}")
        print(f"metrics: {metrics_url}")
        if not can_plot():  # said now, so nobody waits a minute for a PNG that cannot come
            print(
                "timeline: matplotlib is not installed, so no PNG at the end "
                "(pip install 'pool-exporter[demo]'); the summary and --json still come"
            )
        total = args.duration
        print(
            f"plan: {BACKGROUND_RATE:g} requests/s for {total:g} s, then at {push_at:g} s a push "
            f"of {args.users} users over {args.ramp:g} s; pool_size {settings.pool_size}, "
            f"max_overflow {settings.max_overflow}, pool_timeout {settings.pool_timeout:g} s; "
            f"hold median {HOLD.median:g} s, "
            f"p95 {HOLD.p95:g} s"
        )
        zero = time.monotonic()
        watch = None if args.no_prometheus else start_alerting(stack, port, zero, args.rules)
        view = LiveView(total=total, push_at=push_at, alerts=watch.firing if watch else list)
        runner = rp.Replay(
            engine, settings, scenario, handle=handle, on_sample=view, pool_name=POOL_NAME
        )
        interrupt.runner = runner
        if interrupt.hit:  # Ctrl-C while Prometheus was starting
            runner.cancel()
        offset = time.monotonic() - zero  # the replay's t = 0 on the watch's clock
        result = runner.run()
        if watch is not None:
            time.sleep(min(2.0, watch.interval * 4))  # one more evaluation after the end
        alerts = watch.snapshot() if watch else []
    print()
    for line in rp.summary(result):
        print(line)
    for line in alert_lines(alerts, result, offset):
        print(line)
    if args.json:
        rp.write_json(result, args.json)
    png = plot(result, args.out, markers_for(result, alerts, offset))
    print(f"timeline        {png}")
    return 0


def start_alerting(
    stack: contextlib.ExitStack, port: int, zero: float, rules: Path | None
) -> AlertWatch | None:
    """A Prometheus server scraping the demo every second with the project's rules, and a
    watch on its alerts; None (and how to get one) when there is no Prometheus binary."""
    from . import promserver

    binary = promserver.find_prometheus()
    if binary is None:
        print(
            "alerts: no Prometheus binary found, so the alert rules are not evaluated "
            "(apt-get install prometheus, or put `prometheus` on PATH)"
        )
        return None
    rules = rules or rules_file()
    if rules is None:
        print(f"alerts: no alert rules found ({data_files.RULES}); not evaluated")
        return None
    try:
        prom = stack.enter_context(
            promserver.PrometheusServer([f"127.0.0.1:{port}"], rule_files=[rules], binary=binary)
        )
        prom.wait_for_scrape()
    except promserver.PrometheusError as exc:
        print(f"alerts: not evaluated, Prometheus did not start: {exc}")
        return None
    print(f"alerts: Prometheus {prom.url} scraping every 1 s with {rules}")
    return stack.enter_context(AlertWatch(prom.alerts, zero=zero))


def rules_file() -> Path | None:
    """./alerts (where `alerts generate` writes, a checkout of the project), else the default
    rules shipped with the package, which need no PyYAML to read."""
    here = Path.cwd() / data_files.RULES
    return here if here.is_file() else data_files.find(data_files.RULES)


def alert_lines(alerts: list[AlertTimes], result: Result, offset: float) -> list[str]:
    first_timeout = None if result.first_timeout is None else result.first_timeout + result.push_at
    lines = []
    for a in alerts:
        if a.firing is None:
            lines.append(f"alert           {a.name}: pending, never fired")
            continue
        at = a.firing - offset
        text = (
            f"alert           {a.name} ({a.severity}) fired {at - result.push_at:+.1f} s "
            "from the push"
        )
        if first_timeout is not None:
            lead = first_timeout - at
            text += (
                f", {lead:.1f} s before the first timeout"
                if lead >= 0
                else f", {-lead:.1f} s after the first timeout"
            )
        lines.append(text)
    return lines


def markers_for(result: Result, alerts: list[AlertTimes], offset: float) -> list[Marker]:
    markers = [Marker(result.push_at, "push", "tab:purple")]
    if result.first_timeout is not None:
        markers.append(Marker(result.push_at + result.first_timeout, "first timeout", "tab:red"))
    colors = {"critical": "darkred", "warning": "darkorange"}
    for a in alerts:
        if a.firing is not None:
            markers.append(
                Marker(a.firing - offset, f"{a.name} fired", colors.get(a.severity, "tab:brown"))
            )
    return markers
