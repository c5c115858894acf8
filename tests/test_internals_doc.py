"""docs/internals.md backs each statement with a test: every test it names exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# `test_x.py::test_name`, or `::test_name` for another test of the file named last
REFERENCE = re.compile(r"`(?:(test_\w+\.py))?::(test_\w+)`")


def _tests_in(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_test_the_internals_page_names_exists() -> None:
    text = (ROOT / "docs" / "internals.md").read_text()
    named: list[tuple[str, str]] = []
    current = None
    for match in REFERENCE.finditer(text):
        current = match.group(1) or current
        assert current is not None, f"{match.group(0)} names no file"
        named.append((current, match.group(2)))
    assert len(named) > 30
    missing = [f"{f}::{t}" for f, t in named if t not in _tests_in(ROOT / "tests" / f)]
    assert not missing
