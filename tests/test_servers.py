"""Every server people run SQLAlchemy apps under, started for real with its workers recycled,
beside the real sidecar: uWSGI (app loaded in the master, and --lazy-apps), gunicorn's gevent
and gthread workers, `uvicorn --workers` and a Celery prefork worker.

For each: the checkouts counted equal what the app itself counted as served, the totals never
go backwards from one scrape to the next, and the per-worker gauges are those of the live
instrumented processes only. The per-worker series are told apart by whatever labels they
carry besides `pool` and `state`, so the assertions hold whichever label names a worker.
uWSGI runs with deploy/uwsgi.ini's settings and Celery with deploy/celeryconfig.py.
"""

from __future__ import annotations

import configparser
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from .support import procs as p
from .support.procs import APPS, BIN, ROOT, Procs, Samples, Sidecar, procs
from .support.workers import alive

__all__ = ["procs"]

WORKERS = 2
RECYCLE_AFTER = 5  # requests or tasks a worker serves before it is replaced
REQUESTS = 30
CONCURRENCY = 3


@dataclass(frozen=True)
class Server:
    """How to start one server with WORKERS workers recycled every RECYCLE_AFTER requests."""

    argv: Callable[[Path, int], list[str]]  # the command line, given a directory and a port
    # The process that loads the app stays alive beside its workers (a preloading master):
    # its pool has gauges of its own, at zero.
    loader_stays: bool


def deploy_uwsgi_ini(directory: Path) -> Path:
    """deploy/uwsgi.ini without its socket and module, which the test gives on the command
    line after it, with the worker count and recycling (later options win in uWSGI)."""
    parser = configparser.ConfigParser()
    parser.read(ROOT / "deploy" / "uwsgi.ini")
    for own in ("http-socket", "module"):
        parser.remove_option("uwsgi", own)
    path = directory / "uwsgi.ini"
    with open(path, "w") as f:
        parser.write(f)
    return path


def _uwsgi(*mode: str, module: str = "wsgi_app:app") -> Callable[[Path, int], list[str]]:
    def argv(tmp: Path, port: int) -> list[str]:
        return [
            str(BIN / "uwsgi"), "--ini", str(deploy_uwsgi_ini(tmp)), "--processes", str(WORKERS),
            "--http-socket", f"127.0.0.1:{port}", "--home", sys.prefix,
            "--pythonpath", str(APPS), "--module", module,
            "--max-requests", str(RECYCLE_AFTER), "--min-worker-lifetime", "0",
            "--disable-logging", *mode,
        ]  # fmt: skip

    return argv


def _gunicorn(*worker: str) -> Callable[[Path, int], list[str]]:
    def argv(_: Path, port: int) -> list[str]:
        return [
            str(BIN / "gunicorn"), "-w", str(WORKERS), *worker, "-b", f"127.0.0.1:{port}",
            "--max-requests", str(RECYCLE_AFTER), "--max-requests-jitter", "0",
            "--pythonpath", str(APPS), "wsgi_app:app",
        ]  # fmt: skip

    return argv


def _uvicorn(_: Path, port: int) -> list[str]:
    return [
        str(BIN / "uvicorn"), "--workers", str(WORKERS), "--host", "127.0.0.1",
        "--port", str(port), "--limit-max-requests", str(RECYCLE_AFTER),
        "--app-dir", str(APPS), "--no-access-log", "asgi_app:app",
    ]  # fmt: skip


WEB_SERVERS = {
    # uWSGI's default: the app is loaded in the master, which forks the workers from C.
    "uwsgi": Server(_uwsgi(), loader_stays=True),
    "uwsgi --lazy-apps": Server(_uwsgi("--lazy-apps"), loader_stays=False),
    "gunicorn -k gevent": Server(_gunicorn("-k", "gevent"), loader_stays=False),
    "gunicorn -k gthread --preload": Server(
        _gunicorn("-k", "gthread", "--threads", "4", "--preload"), loader_stays=True
    ),
    "uvicorn --workers": Server(_uvicorn, loader_stays=False),
}


@dataclass
class Run:
    """One server under test: its multiprocess directory, the sidecar reading it, and the
    file the app counts what it served in."""

    directory: Path
    sidecar: Sidecar
    served_file: Path
    env: dict[str, str]

    def served(self, what: str | None = None) -> list[int]:
        """The pid of the worker that served each request or task (or only those of one
        kind: `request`, `postfork`), as the app counted them."""
        if not self.served_file.exists():
            return []
        lines = self.served_file.read_text().splitlines()
        return [int(pid) for pid, kind in map(str.split, lines) if what in (None, kind)]


def prepare(procs: Procs, tmp_path: Path, pg_url: str, name: str) -> Run:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    served_file = tmp_path / "served"
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "APP_DATABASE_URL": pg_url,
        "APP_NAME": name,
        "APP_SERVED_FILE": str(served_file),
    }
    return Run(directory, p.start_sidecar(procs, directory), served_file, env)


def start_web(procs: Procs, run: Run, kind: str, **env: str) -> str:
    return start_server(procs, run, WEB_SERVERS[kind], kind, **env)


def start_server(procs: Procs, run: Run, server: Server, kind: str, **env: str) -> str:
    port = p.free_port()
    procs.start(
        server.argv(run.directory.parent, port), {**run.env, **env}, name=kind.split(maxsplit=1)[0]
    )
    url = f"http://127.0.0.1:{port}"
    p.wait_until(lambda: httpx.get(url + "/pid").status_code == 200, 30, f"{kind} to serve")
    return url


def worker_series(samples: Samples) -> set[tuple[tuple[str, str], ...]]:
    """One label set per worker's pool: the in-use gauge's labels besides pool and state."""
    return {
        tuple(sorted((k, v) for k, v in s[1].items() if k not in ("pool", "state")))
        for s in p.select(samples, "sqlalchemy_pool_connections", pool="app", state="in_use")
    }


def checkouts(samples: Samples) -> float:
    return p.total(samples, "sqlalchemy_pool_checkouts_total", pool="app")


def load(run: Run, work: Callable[[int], None], count: int) -> list[float]:
    """Run `work` `count` times, CONCURRENCY at once, scraping the sidecar all the while;
    returns the checkout totals those scrapes saw, in order."""
    seen: list[float] = []
    done = threading.Event()

    def scrape_during_load() -> None:
        while not done.is_set():
            seen.append(checkouts(run.sidecar.scrape()))

    scraper = threading.Thread(target=scrape_during_load)
    scraper.start()
    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            list(pool.map(work, range(count)))
    finally:
        done.set()
        scraper.join()
    return seen


def assert_exact_and_live(run: Run, seen: list[float], sent: int, live_series: int) -> None:
    """Totals equal what the app served and never went backwards; workers were recycled, and
    the gauges are those of the live processes only, once the server has replaced the last
    recycled worker."""
    assert seen, "no scrape completed during the load"
    served = len(run.served())
    assert served >= sent
    try:
        final = p.wait_until(
            lambda: (s := run.sidecar.scrape()) and checkouts(s) == served and s, 10
        )
    except pytest.fail.Exception:
        final = run.sidecar.scrape()
    assert checkouts(final) == served, f"{checkouts(final)} checkouts counted, {served} served"
    seen.append(checkouts(final))
    assert seen == sorted(seen), f"the total went backwards: {seen}"
    assert p.total(final, "sqlalchemy_pool_connection_hold_seconds_count", pool="app") == served

    served_by = set(run.served())
    assert len(served_by) > WORKERS, f"no worker was recycled: {sorted(served_by)}"

    def settled() -> Samples | None:
        samples = run.sidecar.scrape()
        gauges = p.select(samples, "sqlalchemy_pool_connections", pool="app", state="in_use")
        live = all(alive(p.pid_of(samples, gauge)) for gauge in gauges)
        return samples if len(worker_series(samples)) == live_series and live else None

    samples = p.wait_until(settled, 30, f"gauges for the {live_series} live processes only")
    assert samples is not None
    for labels in worker_series(samples):
        assert p.select(samples, "sqlalchemy_pool_connections", pool="app", state="idle",
                      **dict(labels)), labels  # fmt: skip


def send_requests(run: Run, base: str) -> list[float]:
    """REQUESTS queries, scraping all the while: the checkout totals the scrapes saw."""

    def request(_: int) -> None:
        # A connection of its own each time; a worker exiting after its last request may reset
        # one the load balancer gave it: sent again, as a client would. The app counts what it
        # served, so the totals compare with that, whatever was sent.
        for attempt in range(3):
            try:
                httpx.get(base + "/query", params={"sleep": "0.01"}, timeout=20).raise_for_status()
                return
            except httpx.TransportError:
                if attempt == 2:
                    raise

    seen = load(run, request, REQUESTS)
    # A gevent worker looks at its max_requests once a second: on a quiet machine the load
    # can end before any worker notices. A few more requests (bounded) until one was replaced.
    for _ in range(20):
        if len(set(run.served())) > WORKERS:
            break
        time.sleep(0.5)
        seen += load(run, request, CONCURRENCY)
    return seen


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("kind", list(WEB_SERVERS))
def test_workers_recycled_under_each_web_server_keep_every_checkout_and_only_live_gauges(
    kind: str, tmp_path: Path, procs: Procs, pg_url: str, pg_app_name: str
) -> None:
    run = prepare(procs, tmp_path, pg_url, pg_app_name)
    base = start_web(procs, run, kind)
    seen = send_requests(run, base)
    live = WORKERS + (1 if WEB_SERVERS[kind].loader_stays else 0)
    assert_exact_and_live(run, seen, REQUESTS, live)


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("postfork", ["raw", "decorator"])
def test_uwsgi_runs_the_applications_own_post_fork_hook_after_the_workers_reset(
    postfork: str, tmp_path: Path, procs: Procs, pg_url: str, pg_app_name: str
) -> None:
    # The app's hook checks a connection out in each new worker: counted in that worker's own
    # numbers only if the reset ran first, whether the hook was set before instrument() or
    # (by uwsgidecorators) after it.
    run = prepare(procs, tmp_path, pg_url, pg_app_name)
    server = Server(_uwsgi(module="uwsgi_hooks_app:app"), loader_stays=True)
    base = start_server(procs, run, server, "uwsgi", APP_POSTFORK=postfork)
    seen = send_requests(run, base)
    assert set(run.served("request")) <= set(run.served("postfork"))
    assert_exact_and_live(run, seen, REQUESTS, WORKERS + 1)


@pytest.mark.slow
@pytest.mark.postgres
def test_under_gevent_the_watcher_reports_a_connection_held_past_the_threshold(
    tmp_path: Path, procs: Procs, pg_url: str, pg_app_name: str
) -> None:
    run = prepare(procs, tmp_path, pg_url, pg_app_name)
    base = start_web(procs, run, "gunicorn -k gevent", APP_LONG_CHECKOUT_THRESHOLD="1")
    with ThreadPoolExecutor(1) as pool:
        held = pool.submit(httpx.get, base + "/hold", params={"sleep": "2"}, timeout=20)

        def reported() -> Samples | None:
            samples = run.sidecar.scrape()
            return samples if p.total(samples, "sqlalchemy_pool_long_checkouts_total") else None

        # Reported by the watcher while the connection is still out, not at its return: the
        # scrape that first shows it also shows a checkout out for a second or more.
        during = p.wait_until(reported, 10, "the held connection to be reported")
        assert p.total(during, "sqlalchemy_pool_long_checkouts_total", pool="app") == 1
        oldest = p.select(during, "sqlalchemy_pool_oldest_checkout_seconds", pool="app")
        assert max(s[2] for s in oldest) >= 1, "reported only after the connection came back"
        held.result().raise_for_status()
    final = run.sidecar.scrape()
    assert p.total(final, "sqlalchemy_pool_long_checkouts_total", pool="app") == 1
    assert {s[2] for s in p.select(final, "sqlalchemy_pool_oldest_checkout_seconds")} == {0}


@pytest.mark.slow
@pytest.mark.postgres
# kombu's SQLAlchemy transport (the producer's, in this process) still uses `noload`.
@pytest.mark.filterwarnings("ignore:The ``noload`` loader strategy:DeprecationWarning")
def test_celery_prefork_children_replaced_after_max_tasks_keep_every_checkout(
    tmp_path: Path, procs: Procs, pg_url: str, pg_app_name: str
) -> None:
    from celery import Celery

    run = prepare(procs, tmp_path, pg_url, pg_app_name)
    broker = f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    env = {
        **run.env,
        "CELERY_BROKER_DB": str(tmp_path / "broker.db"),
        "PYTHONPATH": f"{APPS}:{ROOT / 'deploy'}",
    }
    argv = [
        str(BIN / "celery"), "-A", "celery_app", "worker", "-P", "prefork", "-c", str(WORKERS),
        "--max-tasks-per-child", str(RECYCLE_AFTER), "--without-heartbeat", "--without-mingle",
        "--without-gossip", "--loglevel", "warning",
    ]  # fmt: skip
    # Sent from here without importing the app, so this process instruments nothing. The
    # queue is declared before the worker starts: kombu's SQLAlchemy transport inserts its row
    # on first use, and the worker and the producer both inserting it at once is a UNIQUE
    # violation that kills the worker ("Unrecoverable error", seen on a loaded machine).
    producer = Celery("producer", broker=broker)
    with producer.connection_for_write() as connection:
        connection.default_channel.queue_declare(queue="celery")
    procs.start(argv, env, name="celery")
    # The main worker process instruments at import and stays: one series, plus its children.
    live = WORKERS + 1
    p.wait_until(lambda: len(worker_series(run.sidecar.scrape())) == live, 30, "celery to start")
    try:
        seen = load(run, lambda _: producer.send_task("checkout") and None, REQUESTS)

        def all_served() -> bool:
            seen.append(checkouts(run.sidecar.scrape()))
            return len(run.served()) == REQUESTS

        p.wait_until(all_served, 60, "every task to be served")
    finally:
        producer.close()
    assert_exact_and_live(run, seen, REQUESTS, live)
