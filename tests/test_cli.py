"""The command line: exit codes, one-line errors, and no credentials echoed back."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pool_exporter import cli
from pool_exporter.mixin import shipped

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg://app@127.0.0.1:1/quiz"


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


def test_version_is_the_installed_distributions() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pool-exporter {importlib.metadata.version('pool-exporter')}"


@pytest.mark.parametrize(
    ("command", "file", "committed"),
    [
        ("alerts", None, "alerts/pool-exporter.rules.yml"),
        ("alerts", "alertmanager.example.yml", "alerts/alertmanager.example.yml"),
        ("dashboards", None, "dashboards/pool-exporter.json"),
    ],
)
def test_show_prints_the_committed_file_byte_for_byte(
    command: str, file: str | None, committed: str
) -> None:
    result = run(command, "show", *([file] if file else []))
    assert result.returncode == 0, result.stderr
    assert result.stdout == (ROOT / committed).read_text()


def without(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI in a process where `module` cannot be imported, as if its extra were not
    installed (tests/test_wheel.py does it for real, in a fresh virtualenv)."""
    code = (
        f"import sys; sys.modules[{module!r}] = None\n"
        "from pool_exporter.cli import main\n"
        f"sys.exit(main({list(args)!r}))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("module", "args", "extra"),
    [
        ("yaml", ["alerts", "generate", "--check"], "alerts"),
        ("grafanalib", ["dashboards", "generate", "--check"], "dashboards"),
        ("attr", ["dashboards", "generate", "--check"], "dashboards"),
        # a PostgreSQL URL without psycopg: the `postgres` extra, unless the command has its own
        ("psycopg", ["demo", "--no-prometheus", "--database-url", PG_URL], "postgres"),
        (
            "psycopg",
            ["sidecar", "--multiproc-dir=.", "--database-url-file=pyproject.toml"],
            "sidecar",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it_and_exit_2(
    module: str, args: list[str], extra: str
) -> None:
    result = without(module, *args)
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"error: pool-exporter {args[0]} needs {module}, which is not installed: "
        f"pip install 'pool-exporter[{extra}]'\n"
    )


def test_show_works_without_the_generators_extras() -> None:
    assert without("yaml", "alerts", "show").stdout == (ROOT / shipped.RULES).read_text()
    result = without("grafanalib", "dashboards", "show")
    assert json.loads(result.stdout)["uid"] == "pool-exporter"


def test_a_missing_module_that_no_extra_brings_is_not_disguised() -> None:
    # e.g. a broken installation: the traceback is what helps
    result = without("pool_exporter.mixin.routing", "alerts", "generate", "--check")
    assert result.returncode == 1
    assert "ModuleNotFoundError" in result.stderr


def test_every_extra_the_cli_names_exists_in_pyproject() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert set(cli.EXTRAS) <= set(extras)
