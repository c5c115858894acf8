"""Files a generator commits: write them, or check that the committed copies are current."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_generate_command(
    parser: argparse.ArgumentParser, *, what: str, out_dir: Path
) -> argparse.ArgumentParser:
    """`<command> generate [--out-dir DIR] [--check]`: the subcommand every generator offers."""
    sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    gen = sub.add_parser("generate", help=f"write {what}")
    gen.add_argument(
        "--out-dir",
        type=Path,
        default=out_dir,
        help="directory of the generated files (default: %(default)s)",
    )
    gen.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 if a file is missing or differs from the generator",
    )
    return gen


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
