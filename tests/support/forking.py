"""Running a test's body in a forked child and reading back what it returned."""

from __future__ import annotations

import ast
import os
import traceback
from collections.abc import Callable
from typing import Any


def in_child(body: Callable[[], Any], fork: Callable[[], int] = os.fork) -> Any:
    """Fork with `fork`, run `body` in the child, and return its result (a Python literal);
    a failure in the child fails the test with the child's traceback."""
    read, write = os.pipe()
    pid = fork()
    if pid == 0:
        try:
            try:
                report = repr((True, body()))
            except BaseException:
                report = repr((False, traceback.format_exc()))
            os.write(write, report.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        text = pipe.read().decode()
    os.waitpid(pid, 0)
    ok, result = ast.literal_eval(text)
    assert ok, f"the forked child failed:\n{result}"
    return result
