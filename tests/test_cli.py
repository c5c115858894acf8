"""The command line: the subcommands its help lists, each one's exit codes, one-line errors,
and no credentials echoed back."""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from pool_exporter import cli
from pool_exporter.mixin import data_files

from .support.cli import run

ROOT = Path(__file__).resolve().parent.parent
PG_URL = "postgresql+psycopg://app@127.0.0.1:1/quiz"

# Every subcommand, in the order the help lists them, with its one-line help.
SUBCOMMANDS = {
    "demo": "replay the push incident on an embedded SQLite pool",
    "replay": "replay a burst of users against any database",
    "advise": "size a pool from measured data",
    "sidecar": "serve a multi-worker app's metrics and the database's",
    "alerts": "print or generate the Prometheus alert rules",
    "dashboards": "print or generate the Grafana dashboard",
}


def listed_subcommands(help_text: str) -> dict[str, str]:
    """The entries argparse writes under the COMMAND positional: `    name   help`."""
    section = help_text.split("positional arguments:\n", 1)[1].split("\n\n", 1)[0]
    lines = section.splitlines()
    assert lines[0].strip() == "COMMAND", section
    entries = [re.fullmatch(r" {4}(\S+) +(\S.*)", line) for line in lines[1:]]
    assert all(entries), section
    return {e[1]: e[2] for e in entries if e}


def usage_error(result: subprocess.CompletedProcess[str], prog: str) -> str:
    """The message of a usage error: exit code 2, usage, then one `error:` line, no traceback."""
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.rstrip("\n").splitlines()
    assert lines[0].startswith(f"usage: {prog} "), lines
    assert lines[-1].startswith(f"{prog}: error: "), lines
    assert sum("error:" in line for line in lines) == 1, lines
    return lines[-1].removeprefix(f"{prog}: error: ")


def test_help_lists_exactly_the_subcommands_with_their_help() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert result.stdout.startswith("usage: pool-exporter ")
    assert list(listed_subcommands(result.stdout).items()) == list(SUBCOMMANDS.items())


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_its_own_help_and_refuses_an_unknown_flag(name: str) -> None:
    helped = run(name, "--help")
    assert helped.returncode == 0, helped.stderr
    assert helped.stdout.startswith(f"usage: pool-exporter {name} ")
    assert helped.stderr == ""
    # A flag no subcommand has: the subcommand's parser or the top one refuses it.
    args = {"advise": ["--from-replay", "x.json"], "alerts": ["generate"]}
    args["dashboards"] = args["alerts"]
    message = usage_error(run(name, *args.get(name, []), "--no-such-flag"), "pool-exporter")
    assert message == "unrecognized arguments: --no-such-flag"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("advise", "one of the arguments --prometheus --from-replay is required"),
        ("alerts", "the following arguments are required: ACTION"),
        ("dashboards", "the following arguments are required: ACTION"),
    ],
)
def test_a_subcommand_missing_a_required_argument_is_a_usage_error(name: str, message: str) -> None:
    assert usage_error(run(name), f"pool-exporter {name}") == message


@pytest.mark.parametrize("name", ["alerts", "dashboards"])
def test_the_generators_check_mode_exits_0_for_the_committed_files(name: str) -> None:
    result = run(name, "generate", "--check", "--out-dir", str(ROOT / name))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == result.stderr == ""


def test_a_mistyped_flag_never_echoes_the_password_it_carried() -> None:
    result = run("sidecar", "--database-ur=postgresql://app:s3cret-pw@db:5432/quiz")
    message = usage_error(result, "pool-exporter")
    assert "s3cret-pw" not in result.stderr + result.stdout
    assert message == "unrecognized arguments: --database-ur=postgresql://***@db:5432/quiz"


def test_an_unknown_subcommand_is_a_usage_error() -> None:
    message = usage_error(run("frobnicate"), "pool-exporter")
    assert message.startswith("argument COMMAND: invalid choice: 'frobnicate' (choose from ")


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
            ["sidecar", "--multiproc-dir=.", "--database-url-file={url_file}"],
            "sidecar",
        ),
    ],
)
def test_a_missing_extra_is_one_line_naming_it_and_exit_2(
    module: str, args: list[str], extra: str, tmp_path: Path
) -> None:
    url_file = tmp_path / "database-url"
    url_file.write_text(PG_URL + "\n")
    result = without(module, *(a.format(url_file=url_file) for a in args))
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert result.stderr == (
        f"error: pool-exporter {args[0]} needs {module}, which is not installed: "
        f"pip install 'pool-exporter[{extra}]'\n"
    )


def test_show_works_without_the_generators_extras() -> None:
    assert without("yaml", "alerts", "show").stdout == (ROOT / data_files.RULES).read_text()
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
