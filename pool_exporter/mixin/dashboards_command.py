"""`pool-exporter dashboards`: print the shipped dashboard, or generate it (the `dashboards`
extra)."""

from __future__ import annotations

import argparse

from . import generated
from .shipped import DASHBOARD_FILE


def configure(parser: argparse.ArgumentParser) -> None:
    generated.add_actions(
        parser, what="the dashboard JSON files", directory="dashboards", default=DASHBOARD_FILE
    )


def _generator() -> generated.Generator:
    # grafanalib comes with the `dashboards` extra; without it the CLI names the extra.
    from .dashboards import generate

    return generate


def run(args: argparse.Namespace) -> int:
    return generated.run(args, _generator)
