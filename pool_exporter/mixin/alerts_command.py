"""`pool-exporter alerts`: print the shipped rules, or generate them (the `alerts` extra)."""

from __future__ import annotations

import argparse

from pool_exporter.errors import CliError

from .config import add_config_argument
from .generated import add_actions, show, write_or_check
from .shipped import RULES_FILE, RUNBOOKS


def configure(parser: argparse.ArgumentParser) -> None:
    gen = add_actions(
        parser,
        what="the rule files and the Alertmanager example",
        directory="alerts",
        default=RULES_FILE,
        # what the alerts' runbook_url links point at, to host where your team can reach it
        also={"runbooks.md": RUNBOOKS},
    )
    add_config_argument(gen)


def run(args: argparse.Namespace) -> int:
    if args.action == "show":
        return show(args)
    # PyYAML comes with the `alerts` extra; without it the CLI names the extra and exits 2.
    from .alerts import generate
    from .config import ConfigError, from_args

    try:
        cfg = from_args(args)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    try:
        return write_or_check(
            generate(cfg, args.out_dir), check=args.check, command="pool-exporter alerts generate"
        )
    except OSError as exc:
        raise CliError(f"cannot write {args.out_dir}: {exc.strerror or exc}") from None
