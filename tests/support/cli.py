"""The `pool-exporter` command, run as a user runs it: a process of its own, output captured."""

from __future__ import annotations

import os
import subprocess
import sys


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`pool-exporter ARGS`, with no database URL inherited from the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "pool_exporter.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "POOL_EXPORTER_DATABASE_URL": "", **(env or {})},
    )
