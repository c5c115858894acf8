"""Where the committed rules, dashboards and runbooks are: in the installed package's data, or
in a checkout."""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent
# A wheel carries the checkout's top-level files under pool_exporter/data/ with the same
# relative paths (pyproject's [tool.hatch.build.targets.wheel]); an editable install or a
# checkout has only the top-level ones.
ROOTS = (PACKAGE / "data", PACKAGE.parent)

RULES_FILE = "pool-exporter.rules.yml"
RULES = f"alerts/{RULES_FILE}"
DASHBOARD_FILE = "pool-exporter.json"
RUNBOOKS = "docs/runbooks.md"


def find(relative: str) -> Path | None:
    """The shipped file at `relative` (e.g. `alerts/pool-exporter.rules.yml`), or None."""
    for root in ROOTS:
        candidate = root / relative
        if candidate.is_file():
            return candidate
    return None


def listing(directory: str) -> dict[str, Path]:
    """{file name: path} of the files shipped in `directory` (`alerts`, `dashboards`)."""
    for root in ROOTS:
        found = root / directory
        if found.is_dir():
            return {p.name: p for p in sorted(found.iterdir()) if p.is_file()}
    return {}
