"""The command line: exit codes, one-line errors, and no credentials echoed back."""

from __future__ import annotations

import os
import subprocess
import sys


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pool_exporter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "POOL_EXPORTER_DATABASE_URL": "", **(env or {})},
    )


def test_a_mistyped_flag_never_echoes_the_password_it_carried() -> None:
    result = run("sidecar", "--database-ur=postgresql://app:s3cret-pw@db:5432/quiz")
    assert result.returncode == 2
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert "unrecognized arguments" in result.stderr
    assert "postgresql://***@db:5432/quiz" in result.stderr


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    result = run("frobnicate")
    assert result.returncode == 2
    assert "invalid choice: 'frobnicate'" in result.stderr


def test_help_lists_every_subcommand() -> None:
    result = run("--help")
    assert result.returncode == 0
    for name in ("demo", "replay", "advise", "sidecar", "alerts", "dashboards"):
        assert name in result.stdout
