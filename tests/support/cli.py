"""The `pool-exporter` command, run as a user runs it: a process of its own, output captured."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """`pool-exporter ARGS`, with no database URL inherited from the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "pool_exporter.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**os.environ, "POOL_EXPORTER_DATABASE_URL": "", **(env or {})},
    )


def assert_refused_quietly(result: subprocess.CompletedProcess[str], secret: str) -> None:
    """A usage error: exit status 2, one `error:` line, no traceback, and `secret` nowhere."""
    assert result.returncode == 2, result
    assert secret not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert len([line for line in result.stderr.splitlines() if "error:" in line]) == 1


def assert_sidecar_refuses_quietly(
    tmp: Path, secret: str, args: list[str], env: dict[str, str], contents: str | None
) -> None:
    """`pool-exporter sidecar ARGS` over `tmp` is a quiet usage error that never shows `secret`;
    `{url_file}` in ARGS is a file in `tmp` that holds `contents` (if any)."""
    url_file = tmp / "url"
    if contents is not None:
        url_file.write_text(contents)
    args = [arg.format(url_file=url_file) for arg in args]
    result = run("sidecar", f"--multiproc-dir={tmp}", *args, env=env)
    assert_refused_quietly(result, secret)
