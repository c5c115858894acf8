"""No part of a URL's userinfo in any output, whatever the URL looks like."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import sqlalchemy as sa

from pool_exporter import redact

from .support.cli import run
from .support.procs import Procs, free_port, procs, start_sidecar

__all__ = ["procs"]


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("postgresql://app:s3cret@db:5432/quiz", "postgresql://***@db:5432/quiz"),
        ("postgresql+psycopg://app:p%40ss@db/quiz", "postgresql+psycopg://***@db/quiz"),
        ("postgresql://db/quiz?password=s3cret&sslmode=require", "postgresql://db/quiz"),
        ("postgresql://app@[::1]:5432/quiz", "postgresql://***@[::1]:5432/quiz"),
        ("postgresql://app:pw@[fe80::1%25eth0]/quiz", "postgresql://***@[fe80::1%25eth0]/quiz"),
        ("sqlite:////var/lib/app/app.db", "sqlite:////var/lib/app/app.db"),
        ("http://prometheus:9090", "http://prometheus:9090"),
        # an unencoded @, /, ? or # in the password moves part of it into another part
        ("postgresql://mon:p@ssword@127.0.0.1:5432/test", redact.MALFORMED),
        ("postgresql://u:S3c/retPW@h/db", redact.MALFORMED),
        ("postgresql://u:123/retPW@h/db", redact.MALFORMED),
        ("postgresql://u:12?retPW@h/db", redact.MALFORMED),
        ("postgresql://u:pa#retPW@h/db", redact.MALFORMED),
        ("postgresql://u:my retPW@h/db", redact.MALFORMED),
        ("not a url", redact.MALFORMED),
    ],
)
def test_a_url_is_shown_without_userinfo_and_query_or_not_at_all(given: str, shown: str) -> None:
    assert redact.url(given) == shown


def test_a_sqlalchemy_url_object_is_shown_like_its_text() -> None:
    engine_url = sa.make_url("postgresql+psycopg://app:a%2Fb%40c@db:5433/quiz")
    assert redact.url(engine_url) == "postgresql+psycopg://***@db:5433/quiz"


def test_a_url_quoted_in_a_message_is_replaced_whole_and_the_text_around_kept() -> None:
    message = "argument --x: invalid value: 'postgresql://u:pa'ss@h/db' (OperationalError)"
    assert redact.text(message) == (
        "argument --x: invalid value: 'postgresql://***@h/db' (OperationalError)"
    )
    assert redact.text("cannot reach http://u:pw@127.0.0.1:1: refused.") == (
        "cannot reach http://***@127.0.0.1:1: refused."
    )
    # A URL with a space is two words in the message: the raw argument replaces it whole.
    argument = "--databse-url=postgresql://u:my retPW@h/db"
    assert redact.text(f"unrecognized arguments: {argument}", [argument]) == (
        f"unrecognized arguments: --databse-url={redact.MALFORMED}"
    )


def assert_one_error_line_without(result: subprocess.CompletedProcess[str], *parts: str) -> str:
    assert result.returncode == 2, result
    output = result.stdout + result.stderr
    for part in parts:
        assert part not in output, output
    assert "Traceback" not in output
    (line,) = [line for line in result.stderr.splitlines() if "error:" in line]
    return line


def test_a_mistyped_flag_with_a_password_holding_a_slash_shows_nothing_of_it() -> None:
    result = run("sidecar", "--databse-url=postgresql://u:S3c/retPW@h/db")
    line = assert_one_error_line_without(result, "S3c", "retPW", "u:")
    assert line.endswith(f"unrecognized arguments: --databse-url={redact.MALFORMED}")


def test_the_sidecar_refuses_a_url_with_an_unencoded_at_and_names_no_part_of_it(
    tmp_path: Path,
) -> None:
    url = "postgresql://mon:p@Zq8wx@127.0.0.1:5432/test"
    result = run("sidecar", f"--multiproc-dir={tmp_path}", env={"POOL_EXPORTER_DATABASE_URL": url})
    line = assert_one_error_line_without(result, "Zq8wx", "mon", "***")
    assert "malformed" in line


def test_replay_refuses_a_url_with_an_unencoded_at_and_names_no_part_of_it() -> None:
    result = run("replay", "--database-url=postgresql://mon:p@Zq8wx@127.0.0.1:5432/test")
    line = assert_one_error_line_without(result, "Zq8wx", "mon")
    assert "malformed" in line


@pytest.mark.postgres
def test_a_one_letter_password_is_never_masked_inside_the_database_error(
    tmp_path: Path, procs: Procs
) -> None:
    # Masking "p" used to log "O***erationalError: connection failed: ... ***ort ...".
    url = f"postgresql://mon:p@127.0.0.1:{free_port()}/test"
    sidecar = start_sidecar(
        procs, tmp_path, "--database-timeout=2", env={"POOL_EXPORTER_DATABASE_URL": url}
    )
    sidecar.text()
    log = sidecar.proc.output()
    (line,) = [line for line in log.splitlines() if "cannot be queried" in line]
    assert "OperationalError: " in line
    assert "***" not in line
    assert "mon" not in line


@pytest.mark.parametrize(
    "prometheus", ["http://scraper:s3cret-Zq8@127.0.0.1:1", "s3cret-Zq8@localhost:9090"]
)
def test_advise_names_a_prometheus_url_without_its_credentials(prometheus: str) -> None:
    result = run("advise", "--prometheus", prometheus)
    line = assert_one_error_line_without(result, "s3cret", "Zq8", "scraper")
    assert "127.0.0.1:1" in line or "not an http(s) URL" in line
