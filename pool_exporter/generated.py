"""Files a generator commits: write them, or check that the committed copies are current."""

from __future__ import annotations

from pathlib import Path


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
