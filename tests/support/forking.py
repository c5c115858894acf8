"""Running a test's body in a forked child and reading back what it returned."""

from __future__ import annotations

import ast
import os
import signal
import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def in_child(body: Callable[[], Any], fork: Callable[[], int] = os.fork, timeout: int = 30) -> Any:
    """Fork with `fork`, run `body` in the child, and return its result (a Python literal).
    A failure in the child fails the test with the child's traceback; a child still running
    after `timeout` seconds (blocked on a lock, say) is killed and fails it too. A `fork` past
    Python's fork hooks (libc's) leaves every lock another thread held at that moment held in
    the child: a test that uses one is marked `serial`, to run where no other thread is busy."""
    read, write = os.pipe()
    pid = fork()
    if pid == 0:
        try:
            # the default action of SIGALRM ends the process, wherever it is blocked
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            signal.alarm(timeout)
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
    _, status = os.waitpid(pid, 0)
    assert text, f"the forked child wrote nothing (wait status {status}: killed, or hung)"
    ok, result = ast.literal_eval(text)
    assert ok, f"the forked child failed:\n{result}"
    return result


@contextmanager
def held_by_another_thread(lock: Any, most: float = 0.5) -> Iterator[None]:
    """Run the block while another thread holds `lock`, for `most` seconds at the most, so
    that a fork made to wait for the lock goes on once the thread lets it go."""
    inside, done = threading.Event(), threading.Event()

    def hold() -> None:
        with lock:
            inside.set()
            done.wait(most)

    thread = threading.Thread(target=hold)
    thread.start()
    assert inside.wait(5)
    try:
        yield
    finally:
        done.set()
        thread.join()
