"""The suite's own rules, read from its source: helpers come from tests/support/ (never from
conftest.py or another test module), and a test that mounts a file system is marked `root`."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
MODULES = sorted(TESTS.glob("test_*.py"))


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def test_no_test_module_imports_conftest_or_another_test_module() -> None:
    found = []
    for path in MODULES:
        for node in ast.walk(_tree(path)):
            if isinstance(node, ast.ImportFrom) and node.module:
                name = node.module.removeprefix("tests.").lstrip(".")
                if name == "conftest" or name.startswith("test_"):
                    found.append(f"{path.name}: from {node.module}")
    assert not found


def _mounting(tree: ast.Module) -> set[str]:
    """The module's functions (helpers and fixtures) that run `mount` (a command line whose
    first word it is)."""
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef)
        and any(
            isinstance(c, ast.List) and c.elts and ast.unparse(c.elts[0]) == "'mount'"
            for c in ast.walk(node)
        )
    }


def _marked_root(test: ast.FunctionDef) -> bool:
    return any(ast.unparse(d) == "pytest.mark.root" for d in test.decorator_list)


def test_every_test_that_mounts_a_file_system_is_marked_root() -> None:
    unmarked, mounting_tests = [], 0
    for path in MODULES:
        tree = _tree(path)
        helpers = _mounting(tree)
        for test in tree.body:
            if not (isinstance(test, ast.FunctionDef) and test.name.startswith("test_")):
                continue
            called = {n.func.id for n in ast.walk(test) if isinstance(n, ast.Call)
                      and isinstance(n.func, ast.Name)}  # fmt: skip
            used = called | {a.arg for a in test.args.args}  # fixtures by parameter name
            if used & helpers:
                mounting_tests += 1
                if not _marked_root(test):
                    unmarked.append(f"{path.name}::{test.name}")
    assert mounting_tests >= 3  # the rule still finds what it is about
    assert not unmarked
