"""`pool-exporter dashboards`: print the shipped dashboard, or generate it (the `dashboards`
extra)."""

from __future__ import annotations

import argparse

from . import file_commands
from .data_files import DASHBOARD_FILE


def configure(parser: argparse.ArgumentParser) -> None:
    file_commands.add_actions(
        parser, what="the dashboard JSON files", directory="dashboards", default=DASHBOARD_FILE
    )


def _generator() -> file_commands.Generator:
    # grafanalib comes with the `dashboards` extra; without it the CLI names the extra.
    from .dashboards import generate

    return generate


def run(args: argparse.Namespace) -> int:
    return file_commands.run(args, _generator)
