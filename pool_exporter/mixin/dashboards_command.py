"""`pool-exporter dashboards`: print the shipped dashboard, or generate it (the `dashboards`
extra)."""

from __future__ import annotations

import argparse

from pool_exporter.errors import CliError

from .config import add_config_argument
from .generated import add_actions, show, write_or_check
from .shipped import DASHBOARD_FILE


def configure(parser: argparse.ArgumentParser) -> None:
    gen = add_actions(
        parser, what="the dashboard JSON files", directory="dashboards", default=DASHBOARD_FILE
    )
    # The rules' settings file: the panels draw their bands at the thresholds the rules fire at.
    add_config_argument(gen)


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        return show(args)
    # grafanalib comes with the `dashboards` extra; without it the CLI names the extra.
    from .config import ConfigError, from_args
    from .dashboards import DashboardConfig, Thresholds, generate

    try:
        alerts = from_args(args)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    files = generate(DashboardConfig(thresholds=Thresholds.from_alerts(alerts)), args.out_dir)
    try:
        return write_or_check(files, check=args.check, command="pool-exporter dashboards generate")
    except OSError as exc:
        raise CliError(f"cannot write {args.out_dir}: {exc.strerror or exc}") from None
