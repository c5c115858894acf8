"""`pool-exporter alerts`: print the shipped rules, or generate them (the `alerts` extra)."""

from __future__ import annotations

import argparse

from . import file_commands
from .data_files import RULES_FILE, RUNBOOKS


def configure(parser: argparse.ArgumentParser) -> None:
    file_commands.add_actions(
        parser,
        what="the rule files and the Alertmanager example",
        directory="alerts",
        default=RULES_FILE,
        # what the alerts' runbook_url links point at, to host where your team can reach it
        also={"runbooks.md": RUNBOOKS},
    )


def _generator() -> file_commands.Generator:
    # PyYAML comes with the `alerts` extra; without it the CLI names the extra and exits 2.
    from .rule_files import generate

    return generate


def run(args: argparse.Namespace) -> int:
    return file_commands.run(args, _generator)
