"""The sidecar's database view against the real PostgreSQL, and how it fails."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from .procs import BIN, Procs, free_port, procs, select, start_sidecar, total, wait_until

__all__ = ["procs"]

PASSWORD = "Hunter2-never-shown-9f3a"

pytestmark = pytest.mark.postgres


def libpq(pg_url: str) -> str:
    return pg_url.replace("postgresql+psycopg://", "postgresql://")


@pytest.fixture
def sessions(pg_url: str, pg_app_name: str) -> Iterator[list[psycopg.Connection]]:
    """Connections the test opens under its own application_name; closed at the end."""
    made: list[psycopg.Connection] = []
    yield made
    for conn in made:
        conn.close()


def query(pg_url: str, sql: str, *params: object) -> list[tuple[object, ...]]:
    """The test's own look at the server, on a connection of its own."""
    with psycopg.connect(libpq(pg_url), autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def count_by_state(pg_url: str, application_name: str) -> dict[str, int]:
    rows = query(
        pg_url,
        "SELECT state, count(*) FROM pg_stat_activity WHERE application_name = %s GROUP BY state",
        application_name,
    )
    return {str(state): int(str(n)) for state, n in rows}


def test_database_view_agrees_with_pg_stat_activity(
    tmp_path: Path,
    procs: Procs,
    pg_url: str,
    pg_app_name: str,
    sessions: list[psycopg.Connection],
) -> None:
    for n in range(5):
        conn = psycopg.connect(libpq(pg_url), application_name=pg_app_name)
        if n < 2:
            conn.execute("SELECT 1")  # leaves the session idle in transaction
        sessions.append(conn)
    url_file = tmp_path / "database-url"
    url_file.write_text(pg_url + f"?application_name={pg_app_name}-sidecar\n")
    sidecar = start_sidecar(procs, tmp_path, f"--database-url-file={url_file}")

    def ours(samples: list[tuple[str, dict[str, str], float]]) -> dict[str, int]:
        return {
            s[1]["state"]: int(s[2])
            for s in select(samples, "pool_exporter_database_connections")
            if s[1]["application_name"] == pg_app_name
        }

    samples = sidecar.scrape()
    assert total(samples, "pool_exporter_database_up") == 1
    assert ours(samples) == count_by_state(pg_url, pg_app_name)
    assert ours(samples) == {"idle": 3, "idle in transaction": 2}
    assert {s[1]["database"] for s in select(samples, "pool_exporter_database_connections")} >= {
        "test"
    }
    rows = query(
        pg_url,
        "SELECT name, setting::int FROM pg_settings WHERE name IN "
        "('max_connections', 'superuser_reserved_connections', 'reserved_connections')",
    )
    settings = {str(name): int(str(value)) for name, value in rows}
    reserved = settings["superuser_reserved_connections"] + settings.get("reserved_connections", 0)
    assert total(samples, "pool_exporter_database_max_connections") == settings["max_connections"]
    assert total(samples, "pool_exporter_database_reserved_connections") == reserved
    used = total(samples, "pool_exporter_database_connections")
    assert total(samples, "pool_exporter_database_free_connections") == max(
        0, settings["max_connections"] - reserved - used
    )

    # Each scrape is a fresh look, on the connection the sidecar keeps.
    sessions.pop().close()
    sessions.pop().close()
    samples = wait_until(
        lambda: (s := sidecar.scrape()) and ours(s) == {"idle": 1, "idle in transaction": 2} and s
    )
    # The sidecar's one connection counts too: busy with the query while it scrapes.
    own = select(samples, "pool_exporter_database_connections")
    assert [
        (s[1]["state"], s[2]) for s in own if s[1]["application_name"] == f"{pg_app_name}-sidecar"
    ] == [("active", 1)]
    assert count_by_state(pg_url, f"{pg_app_name}-sidecar") == {"idle": 1}


def test_a_terminated_sidecar_connection_is_replaced_within_the_same_scrape(
    tmp_path: Path, procs: Procs, pg_url: str, pg_app_name: str
) -> None:
    name = f"{pg_app_name}-sidecar"
    sidecar = start_sidecar(
        procs, tmp_path, env={"POOL_EXPORTER_DATABASE_URL": f"{pg_url}?application_name={name}"}
    )
    assert total(sidecar.scrape(), "pool_exporter_database_up") == 1
    killed = query(
        pg_url,
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s",
        name,
    )
    assert killed == [(1,)]
    assert total(sidecar.scrape(), "pool_exporter_database_up") == 1
    assert "cannot be queried" not in sidecar.proc.output()


@pytest.mark.parametrize("failure", ["closed port", "no such role and database"])
def test_an_unreachable_database_is_up_0_and_the_pool_metrics_are_still_served(
    tmp_path: Path, procs: Procs, pg_url: str, failure: str
) -> None:
    if failure == "closed port":
        url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:{free_port()}/test"
    else:
        url = f"postgresql+psycopg://nosuchrole:{PASSWORD}@127.0.0.1:5432/nosuchdb"
    procs.writer(tmp_path, "--checkouts", "4")
    sidecar = start_sidecar(
        procs, tmp_path, "--database-timeout=2", env={"POOL_EXPORTER_DATABASE_URL": url}
    )
    texts = [sidecar.text() for _ in range(3)]
    for text in texts:
        assert PASSWORD not in text
    samples = sidecar.scrape()
    assert total(samples, "pool_exporter_database_up") == 0
    assert not select(samples, "pool_exporter_database_max_connections")
    assert total(samples, "pool_exporter_multiprocess_up") == 1
    assert total(samples, "sqlalchemy_pool_checkouts_total", pool="pool0") == 4

    log = sidecar.proc.output()
    assert PASSWORD not in log
    errors = [line for line in log.splitlines() if "cannot be queried" in line]
    assert len(errors) == 1, log  # once when it goes down, not at every scrape
    assert "127.0.0.1:" in errors[0]
    assert "pool_exporter_database_up 0" in errors[0]


def run_sidecar_cli(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "pool-exporter"), "sidecar", f"--multiproc-dir={tmp_path}", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": str(BIN), "POOL_EXPORTER_DATABASE_URL": "", **(env or {})},
    )


@pytest.mark.parametrize(
    "case",
    ["on the command line", "not postgres", "not a URL", "file and environment", "empty file"],
)
def test_a_database_url_that_cannot_be_used_is_refused_without_echoing_it(
    tmp_path: Path, case: str
) -> None:
    secret_url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:5432/test"
    url_file = tmp_path / "url"
    env: dict[str, str] = {}
    args: list[str] = []
    if case == "on the command line":
        args = [f"--database-url={secret_url}"]
    elif case == "not postgres":
        url_file.write_text(f"mysql://root:{PASSWORD}@127.0.0.1/test")
        args = [f"--database-url-file={url_file}"]
    elif case == "not a URL":
        env = {"POOL_EXPORTER_DATABASE_URL": f"host=127.0.0.1 password={PASSWORD}"}
    elif case == "file and environment":
        url_file.write_text(secret_url)
        env = {"POOL_EXPORTER_DATABASE_URL": secret_url}
        args = [f"--database-url-file={url_file}"]
    else:
        url_file.write_text("\n")
        args = [f"--database-url-file={url_file}"]
    result = run_sidecar_cli(tmp_path, *args, env=env)
    assert result.returncode == 2, result
    assert PASSWORD not in result.stderr + result.stdout
    assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1
