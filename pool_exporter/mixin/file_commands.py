"""The `show` and `generate` actions the `alerts` and `dashboards` commands share: print a file
as the package carries it, write a generator's files, or check the committed ones."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from pool_exporter.errors import CliError

from . import data_files
from .config import ConfigError, MixinConfig, add_config_argument, from_args

Generator = Callable[[MixinConfig, Path], dict[Path, str]]


def add_actions(
    parser: argparse.ArgumentParser,
    *,
    what: str,
    directory: str,
    default: str,
    also: dict[str, str] | None = None,
) -> argparse.ArgumentParser:
    """`<command> show [FILE]` (a file of `directory` as shipped with the package, or one of
    `also`, {name: shipped path}; no extra needed) and `<command> generate [--out-dir DIR]
    [--check] [--config FILE]`; returns the `generate` parser."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    files = data_files.listing(directory)
    for name, relative in (also or {}).items():
        found = data_files.find(relative)
        if found is not None:
            files[name] = found
    show = sub.add_parser(
        "show",
        help=f"print one of {what} as shipped with the package (the defaults)",
        description=f"Print one of {what} as shipped with the package, generated with the "
        f"default settings, e.g. `pool-exporter {directory} show > {default}`.",
    )
    show.add_argument(
        "file",
        nargs="?",
        default=default,
        choices=sorted(files) or None,
        help="which file (default: %(default)s)",
    )
    parser.set_defaults(shipped=files, directory=directory)
    gen = sub.add_parser("generate", help=f"write {what} from the generator")
    gen.add_argument(
        "--out-dir",
        type=Path,
        default=Path(directory),
        help="directory of the generated files (default: %(default)s)",
    )
    gen.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file is missing or differs from the generator",
    )
    # One settings file for the rules and the dashboard: the panels narrow and group their
    # queries as the rules do, and draw their bands where the rules fire.
    add_config_argument(gen)
    return gen


def run(args: argparse.Namespace, generator: Callable[[], Generator]) -> int:
    """`show`, or `generate` with the files of `generator()` (imported only then: it needs
    the command's extra) from the config `--config` names. A bad config or an unwritable
    directory is one error line."""
    if args.action == "show":
        return show(args)
    generate = generator()
    try:
        cfg = from_args(args)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    command = f"pool-exporter {args.directory} generate"
    try:
        return write_or_check(generate(cfg, args.out_dir), check=args.check, command=command)
    except OSError as exc:
        raise CliError(f"cannot write {args.out_dir}: {exc.strerror or exc}") from None


def show(args: argparse.Namespace) -> int:
    """Print the shipped file `args.file`."""
    path = args.shipped.get(args.file)
    if path is None:
        raise CliError(f"{args.directory}/{args.file} is not shipped with this installation")
    sys.stdout.write(path.read_text())
    return 0


def write_or_check(files: dict[Path, str], *, check: bool, command: str) -> int:
    """With `check`, write nothing and return 1 when a file is missing or differs (naming
    each and `command` to fix it); otherwise write every file. An OSError propagates."""
    if check:
        stale = [path for path, text in files.items() if _read(path) != text]
        for path in stale:
            print(f"stale: {path} (run `{command}`)")
        return 1 if stale else 0
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(path)
    return 0


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None
