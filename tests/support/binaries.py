"""The programs the tests run besides Python's (promtool, prometheus, amtool, alertmanager):
found on PATH, or the test fails with the packages that bring them; never skipped."""

from __future__ import annotations

import shutil

import pytest


def require_binary(name: str) -> str:
    """The path of `name`, or a failure naming the Debian packages to install."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is required: apt-get install prometheus prometheus-alertmanager",
            pytrace=False,
        )
    return path
