"""A real PgBouncer for tests: in front of the test PostgreSQL, on a free port, as `nobody`."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pool_exporter.incident.promserver import free_port, stop_process

INSTALL_HINT = "apt-get install pgbouncer"


@dataclass
class PgBouncer:
    port: int
    directory: Path
    args: list[str]
    popen: subprocess.Popen[bytes] | None = None

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
    port = free_port()
    ini = directory / "pgbouncer.ini"
    ini.write_text(
        f"""[databases]
* = host={pg_host} port={pg_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/users.txt
admin_users = postgres
stats_users = postgres
pool_mode = {pool_mode}
default_pool_size = {pool_size}
max_client_conn = {max_client_conn}
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
log_connections = 0
log_disconnections = 0
{extra}
"""
    )
    ini.chmod(0o644)
    # trust still wants the user to exist in auth_file; the password is never checked.
    users = directory / "users.txt"
    users.write_text('"postgres" ""\n"root" ""\n')
    users.chmod(0o644)
    args = [path, str(ini)]
    if os.geteuid() == 0:
        args = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *args]
    bouncer = PgBouncer(port, directory, args)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()
        shutil.rmtree(directory, ignore_errors=True)
