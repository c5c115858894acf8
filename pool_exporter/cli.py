"""`pool-exporter`: one subcommand per job; each returns an exit code.

Subcommands live in their own modules, imported only when chosen, so `pool-exporter sidecar`
does not import matplotlib and `pool-exporter demo` does not import psycopg. Each module
offers `configure(parser)` and `run(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from . import redact
from .errors import CliError, MissingExtra
from .release import installed_version

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("pool_exporter.incident.demo", "replay the push incident on an embedded SQLite pool"),
    "replay": ("pool_exporter.incident.replay", "replay a burst of users against any database"),
    "advise": ("pool_exporter.incident.advise", "size a pool from measured data"),
    "sidecar": (
        "pool_exporter.sidecar.command",
        "serve a multi-worker app's metrics and the database's",
    ),
    "alerts": (
        "pool_exporter.mixin.alerts_command",
        "print or generate the Prometheus alert rules",
    ),
    "dashboards": (
        "pool_exporter.mixin.dashboards_command",
        "print or generate the Grafana dashboard",
    ),
}

# The optional imports, by the extra of pyproject.toml that installs them. A subcommand that
# has an extra of its own is told to install that one (it brings everything it needs).
EXTRAS: dict[str, frozenset[str]] = {
    "postgres": frozenset({"psycopg"}),  # first: the smallest extra that brings psycopg
    "demo": frozenset({"matplotlib"}),
    "alerts": frozenset({"yaml"}),
    "dashboards": frozenset({"grafanalib", "attr", "yaml"}),  # yaml: a --config file
    "sidecar": frozenset({"yaml", "bcrypt", "psycopg"}),
}


def missing_extra(command: str | None, exc: ModuleNotFoundError) -> str | None:
    """The extra that installs the module `exc` did not find, or None for any other module
    (a bug, or a broken installation: the traceback is worth seeing)."""
    top = (exc.name or "").partition(".")[0]
    if command in EXTRAS and top in EXTRAS[command]:
        return command
    return next((extra for extra, modules in EXTRAS.items() if top in modules), None)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, except that an error quoting a URL shows it without its credentials: a
    mistyped flag's value is echoed back (`--databse-url=postgresql://app:secret@db/quiz`)."""

    def __init__(self, *args: Any, arguments: Sequence[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arguments = tuple(arguments)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {redact.text(message, self.arguments)}\n")


def version() -> str:
    return installed_version() or "unknown (not installed)"


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="pool-exporter",
        description="Prometheus monitoring for SQLAlchemy connection pools.",
        arguments=argv,
    )
    parser.add_argument(
        "--version", action="version", version=f"%(prog)s {version()}", help="print the version"
    )
    parser.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"]
    )
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=ArgumentParser
    )
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, arguments=argv)
        if name == chosen:  # only the chosen subcommand's module is imported
            importlib.import_module(module).configure(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    chosen = next((a for a in args_list if a in SUBCOMMANDS), None)
    try:
        args = build_parser(args_list).parse_args(args_list)
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        module = importlib.import_module(SUBCOMMANDS[args.command][0])
        return int(module.run(args))
    except CliError as exc:
        # The messages are ours, but may quote a value the user gave: a URL shows no userinfo.
        print(f"error: {redact.text(str(exc), args_list)}", file=sys.stderr)
        return exc.code
    except ModuleNotFoundError as exc:
        extra = missing_extra(chosen, exc)
        if extra is None:
            raise
        top = (exc.name or "").partition(".")[0]
        missing = MissingExtra(f"pool-exporter {chosen}", top, extra)
        print(f"error: {missing}", file=sys.stderr)
        return missing.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
