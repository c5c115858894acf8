"""`pool-exporter sidecar`: serve a multi-worker application's pool metrics and the database's.

Runs beside the application (same host, or same Kubernetes pod sharing an emptyDir), reads the
workers' files from PROMETHEUS_MULTIPROC_DIR and, given a PostgreSQL URL through the
environment or a file, asks the server about its connections at each scrape.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from types import FrameType

from prometheus_client import ProcessCollector
from prometheus_client.registry import CollectorRegistry

from pool_exporter import metrics as m
from pool_exporter import multiprocess
from pool_exporter.errors import CliError
from pool_exporter.multiprocess.reader import WorkersCollector, check_directory
from pool_exporter.rendered import Exposed

from .database import DEFAULT_MAX_APPLICATIONS, DEFAULT_MAX_ROLES, DatabaseCollector
from .httpserver import App, bind, parse_listen_address
from .pgbouncer import DEFAULT_MAX_POOLS, PgBouncerCollector, PoolerListError, parse_poolers
from .urls import DatabaseUrlError
from .webconfig import WebConfigError, load

log = logging.getLogger("pool_exporter")

DEFAULT_LISTEN = ":9653"
URL_ENV = "POOL_EXPORTER_DATABASE_URL"
PGBOUNCER_ENV = "POOL_EXPORTER_PGBOUNCER_URL"


def configure(parser: argparse.ArgumentParser) -> None:
    # `--database-url` must not be read as an abbreviation of --database-url-file.
    parser.allow_abbrev = False
    parser.add_argument(
        "--web.listen-address",
        dest="listen_address",
        default=DEFAULT_LISTEN,
        metavar="HOST:PORT",
        help=f"address to serve on; ':PORT' is every interface (default {DEFAULT_LISTEN})",
    )
    parser.add_argument(
        "--web.telemetry-path",
        dest="telemetry_path",
        default="/metrics",
        metavar="PATH",
        help="path of the metrics (default /metrics)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        default="",
        metavar="FILE",
        help="TLS and basic auth, in the exporter-toolkit format (tls_server_config, "
        "basic_auth_users with bcrypt hashes)",
    )
    parser.add_argument(
        "--multiproc-dir",
        default=multiprocess.directory() or "",
        metavar="DIR",
        help="the application's PROMETHEUS_MULTIPROC_DIR (default: that variable, or the "
        "deprecated lower-case prometheus_multiproc_dir)",
    )
    parser.add_argument(
        "--database-url-file",
        default="",
        metavar="FILE",
        help=f"file holding the PostgreSQL URL to watch (or set {URL_ENV}); without either, "
        "only the application's metrics are served",
    )
    parser.add_argument(
        "--database-timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how long one scrape may spend connecting to and querying the database, and each "
        "pooler (default 5)",
    )
    parser.add_argument(
        "--database-max-applications",
        type=_count,
        default=DEFAULT_MAX_APPLICATIONS,
        metavar="N",
        help="application_name values with the most connections that get series of their own; "
        f"the others are counted as application_name={m.OTHER_APPLICATIONS!r}, 0 counts every "
        f"connection there (default {DEFAULT_MAX_APPLICATIONS})",
    )
    parser.add_argument(
        "--database-max-roles",
        type=_count,
        default=DEFAULT_MAX_ROLES,
        metavar="N",
        help="roles that get series of their own (connections, and the connection limit where "
        "there is one): those nearest their limit first, then the busiest; the others are "
        f"counted as role={m.OTHER_ROLES!r} (default {DEFAULT_MAX_ROLES})",
    )
    parser.add_argument(
        "--pgbouncer-url-file",
        default="",
        metavar="FILE",
        help=f"file listing PgBouncer admin console URLs (postgresql://user@host:6432/pgbouncer), "
        f"one per line, each optionally as NAME=URL to name its `pooler` label (or set "
        f"{PGBOUNCER_ENV})",
    )
    parser.add_argument(
        "--pgbouncer-max-pools",
        type=_count,
        default=DEFAULT_MAX_POOLS,
        metavar="N",
        help="(database, user) pools per pooler with the most connections that get series of "
        f"their own, the others counted as {m.OTHER_POOLS!r}; the same cap on databases "
        f"(default {DEFAULT_MAX_POOLS})",
    )
    # Refused with a clear message instead of argparse's, which would echo the password.
    parser.add_argument("--database-url", help=argparse.SUPPRESS)
    parser.add_argument("--pgbouncer-url", help=argparse.SUPPRESS)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number of seconds")
    return value


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def run(args: argparse.Namespace) -> int:
    if args.database_url is not None:
        raise CliError(
            "--database-url is not accepted: a password on the command line is visible to "
            f"every local user; set {URL_ENV} or use --database-url-file"
        )
    if args.pgbouncer_url is not None:
        raise CliError(
            "--pgbouncer-url is not accepted: a password on the command line is visible to "
            f"every local user; set {PGBOUNCER_ENV} or use --pgbouncer-url-file"
        )
    path = args.telemetry_path
    if not path.startswith("/") or path in ("/", "/-/healthy", "/-/ready"):
        raise CliError(f"--web.telemetry-path {path!r} must be a path such as /metrics")
    try:
        host, port = parse_listen_address(args.listen_address)
        directory = check_directory(args.multiproc_dir)
        web = load(args.web_config_file)
    except (ValueError, WebConfigError) as exc:
        raise CliError(str(exc)) from None

    # The workers' files first, then the sidecar's own views, each family written once.
    workers = WorkersCollector(directory)
    registry = CollectorRegistry()
    database = _database(args)
    if database is not None:
        registry.register(database)
    pgbouncer = _pgbouncer(args)
    if pgbouncer is not None:
        registry.register(pgbouncer)
    ProcessCollector(registry=registry)  # the sidecar's own memory and CPU

    app = App(
        Exposed(workers, registry),
        telemetry_path=path,
        web=web,
        ready=lambda: _not_ready(directory),
    )
    try:
        server = bind(host, port, app, web.ssl_context)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.listen_address}: {exc.strerror or exc}") from None

    def stop(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    scheme = "https" if web.ssl_context else "http"
    bound_host, bound_port = server.server_address[:2]
    log.info(
        "serving %s://%s:%s%s (multiprocess directory %s; database %s; poolers %s; basic auth %s)",
        scheme,
        bound_host,
        bound_port,
        path,
        directory,
        database.target.display if database else "not watched",
        ", ".join(f"{p.name} ({p.target.display})" for p in pgbouncer.poolers)
        if pgbouncer
        else "not watched",
        "on" if web.auth else "off",
    )
    try:
        server.serve_forever()
    finally:
        server.server_close()
        if database is not None:
            database.close()
        if pgbouncer is not None:
            pgbouncer.close()
    return 0


def _from_env_or_file(env: str, flag: str, path: str, what: str, *, one_line: bool = True) -> str:
    """The URL(s) from the environment or a file, never both; a path is not echoed if it
    looks like a URL (a URL given by mistake where the file's path belongs)."""
    url = os.environ.get(env, "").strip()
    if path:
        if url:
            raise CliError(f"give the {what} in {env} or {flag}, not both")
        shown = "(a path that looks like a URL)" if "://" in path else ""
        where = shown or path
        try:
            with open(path, "rb") as f:
                url = f.read().decode("utf-8").strip()
        except OSError as exc:
            raise CliError(f"cannot read {flag} {where}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CliError(f"{flag} {where} is not UTF-8 text") from None
        if not url:
            raise CliError(f"{flag} {where} is empty")
        if "\0" in url or (one_line and "\n" in url):
            raise CliError(f"{flag} {where} must hold one URL on one line")
    return url


def _require_psycopg() -> None:
    """Checked before serving, not at the first scrape: without the `sidecar` extra the CLI
    names it in one line."""
    import psycopg  # noqa: F401


def _pgbouncer(args: argparse.Namespace) -> PgBouncerCollector | None:
    text = _from_env_or_file(
        PGBOUNCER_ENV,
        "--pgbouncer-url-file",
        args.pgbouncer_url_file,
        "PgBouncer URLs",
        one_line=False,  # one pooler a line
    )
    if not text:
        return None
    _require_psycopg()
    try:
        return PgBouncerCollector(
            parse_poolers(text), timeout=args.database_timeout, max_pools=args.pgbouncer_max_pools
        )
    except PoolerListError as exc:
        raise CliError(str(exc)) from None


def _database(args: argparse.Namespace) -> DatabaseCollector | None:
    url = _from_env_or_file(URL_ENV, "--database-url-file", args.database_url_file, "database URL")
    if not url:
        return None
    _require_psycopg()
    try:
        return DatabaseCollector(
            url,
            timeout=args.database_timeout,
            max_applications=args.database_max_applications,
            max_roles=args.database_max_roles,
        )
    except DatabaseUrlError as exc:
        raise CliError(str(exc)) from None


def _not_ready(directory: str) -> str | None:
    try:
        check_directory(directory)
    except ValueError as exc:
        return str(exc)
    return None
