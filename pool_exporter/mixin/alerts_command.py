"""`pool-exporter alerts`: print the shipped rules, or generate them (the `alerts` extra)."""

from __future__ import annotations

import argparse

from . import generated
from .shipped import RULES_FILE, RUNBOOKS


def configure(parser: argparse.ArgumentParser) -> None:
    generated.add_actions(
        parser,
        what="the rule files and the Alertmanager example",
        directory="alerts",
        default=RULES_FILE,
        # what the alerts' runbook_url links point at, to host where your team can reach it
        also={"runbooks.md": RUNBOOKS},
    )


def _generator() -> generated.Generator:
    # PyYAML comes with the `alerts` extra; without it the CLI names the extra and exits 2.
    from .alerts import generate

    return generate


def run(args: argparse.Namespace) -> int:
    return generated.run(args, _generator)
