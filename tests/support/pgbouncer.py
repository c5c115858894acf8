"""A real PgBouncer for tests: in front of the test PostgreSQL, on a free port, as `nobody`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pool_exporter.incident.promserver import free_port, stop_process

INSTALL_HINT = "apt-get install pgbouncer"


@dataclass(frozen=True)
class Settings:
    """The pgbouncer.ini settings a test chooses; `reload()` can change them while it runs."""

    pool_mode: str = "transaction"
    pool_size: int = 5  # default_pool_size: server connections per (database, user) pool
    reserve_pool_size: int = 0  # more, for a pool whose clients waited reserve_pool_timeout
    max_client_conn: int = 100
    users: tuple[str, ...] = ()  # roles besides postgres and root that may log in


@dataclass
class PgBouncer:
    port: int
    directory: Path
    args: list[str]
    settings: Settings = field(default_factory=Settings)
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    extra: str = ""
    popen: subprocess.Popen[bytes] | None = None

    def write_config(self) -> None:
        """pgbouncer.ini and the auth file, readable by `nobody`, from the settings."""
        s = self.settings
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            f"""[databases]
* = host={self.pg_host} port={self.pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.directory}/users.txt
admin_users = postgres
stats_users = postgres
pool_mode = {s.pool_mode}
default_pool_size = {s.pool_size}
reserve_pool_size = {s.reserve_pool_size}
max_client_conn = {s.max_client_conn}
logfile = {self.directory}/pgbouncer.log
pidfile = {self.directory}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
{self.extra}
"""
        )
        ini.chmod(0o644)
        # trust still wants the user to exist in auth_file; the password is never checked.
        users = self.directory / "users.txt"
        users.write_text("".join(f'"{u}" ""\n' for u in ("postgres", "root", *s.users)))
        users.chmod(0o644)

    def reload(self, **changes: Any) -> None:
        """Change settings as an operator does: rewrite the files and RELOAD. Pool sizes and
        max_client_conn take effect for the next connection PgBouncer opens or accepts."""
        self.settings = replace(self.settings, **changes)
        self.write_config()
        self.admin("RELOAD")
        shown = {row["key"]: row["value"] for row in self.admin("SHOW CONFIG")}
        for key, want in (
            ("default_pool_size", self.settings.pool_size),
            ("reserve_pool_size", self.settings.reserve_pool_size),
            ("max_client_conn", self.settings.max_client_conn),
            ("pool_mode", self.settings.pool_mode),
        ):
            if str(shown.get(key)) != str(want):
                raise RuntimeError(f"pgbouncer kept {key}={shown.get(key)} after RELOAD: {want}")

    def start(self) -> None:
        """Start it and wait until its admin console answers."""
        popen = self.popen = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while True:
            if popen.poll() is not None:
                err = popen.stderr.read().decode(errors="replace") if popen.stderr else ""
                raise RuntimeError(f"pgbouncer exited with {popen.returncode}: {err}{self.log()}")
            try:
                self.admin("SHOW VERSION")
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def restart(self) -> None:
        """Stop and start again on the same port: every client connection is dropped."""
        self.stop()
        self.start()

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/pgbouncer"

    def url(self, database: str = "test", driver: str = "psycopg") -> str:
        """A SQLAlchemy URL through the pooler."""
        return f"postgresql+{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def admin(self, command: str) -> list[dict[str, object]]:
        """One admin console command's rows (simple query protocol, as the console wants)."""
        with psycopg.connect(
            self.admin_url, autocommit=True, cursor_factory=psycopg.ClientCursor
        ) as conn:
            cur = conn.execute(command)
            if cur.description is None:
                return []
            columns = [c.name for c in cur.description]
            return [dict(zip(columns, row, strict=True)) for row in cur.fetchall()]

    def log(self) -> str:
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.popen is not None:
            stop_process(self.popen, 5)


def binary() -> str | None:
    # Debian installs it in /usr/sbin, which is not on every user's PATH.
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )


def require() -> None:
    """Fail the test (never skip it) when PgBouncer is not installed."""
    if binary() is None:
        pytest.fail(f"pgbouncer is required: {INSTALL_HINT}", pytrace=False)


@contextmanager
def running(
    *,
    pool_mode: str = "transaction",
    pool_size: int = 5,
    max_client_conn: int = 100,
    reserve_pool_size: int = 0,
    users: tuple[str, ...] = (),
    pg_host: str = "127.0.0.1",
    pg_port: int = 5432,
    extra: str = "",
) -> Iterator[PgBouncer]:
    """PgBouncer with auth_type=trust (the test PostgreSQL trusts local connections), its
    config, log and pidfile in a world-readable temporary directory, since it refuses to run
    as root and runs as `nobody` here."""
    path = binary()
    if path is None:
        raise FileNotFoundError(f"pgbouncer is required: {INSTALL_HINT}")
    directory = Path(tempfile.mkdtemp(prefix="pool-exporter-pgbouncer-"))
    directory.chmod(0o777)  # mkdtemp makes it 0700; nobody must write its log there
    args = [path, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        args = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *args]
    settings = Settings(pool_mode, pool_size, reserve_pool_size, max_client_conn, users)
    bouncer = PgBouncer(free_port(), directory, args, settings, pg_host, pg_port, extra)
    try:
        bouncer.write_config()
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(directory, ignore_errors=True)
