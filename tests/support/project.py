"""The project's own generated files, as the end-to-end tests read them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Overridable so that a team can run the end-to-end tests against its own rules.
RULES = Path(os.environ.get("POOL_EXPORTER_E2E_RULES", ROOT / "alerts/pool-exporter.rules.yml"))


def project_file(path: Path) -> Path:
    """`path`, or a failure saying how to make it (the generators write these files)."""
    if not path.is_file():
        shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
        pytest.fail(
            f"{shown} is missing: `make generate` writes it (`pool-exporter alerts generate`, "
            "`pool-exporter dashboards generate`)",
            pytrace=False,
        )
    return path
