"""The command line: the subcommands its help lists, each one's exit codes, one-line errors,
and no credentials echoed back."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Every subcommand, in the order the help lists them, with its one-line help.
SUBCOMMANDS = {
    "demo": "replay the push incident on an embedded SQLite pool",
    "replay": "replay a burst of users against any database",
    "advise": "size a pool from measured data",
    "sidecar": "serve a multi-worker app's metrics and the database's",
    "alerts": "generate the Prometheus rules and Alertmanager example",
    "dashboards": "generate the Grafana dashboards",
}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pool_exporter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
