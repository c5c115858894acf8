"""Issue 28 on real parts, part one: the load generator. locust sends the push, every user
once and none before its moment (tests/support/stack_load.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .support.stack_load import Push, send


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def answering() -> Iterator[str]:
    """A plain HTTP server answering every request at once: the load generator on its own."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "push",
    [Push(12, 0.0), Push(12, 0.0, rate=20.0), Push(12, 0.0, batch=4, every=0.4)],
    ids=["at once", "20 users/s", "4 users every 0.4 s"],
)
def test_locust_sends_each_user_of_a_push_once_and_never_before_its_moment(
    push: Push, tmp_path: Path
) -> None:
    with answering() as url:
        load = send(push, url, tmp_path, timeout=60)
    assert [r.status for r in load.requests] == [200] * push.users
    assert (load.locust_requests, load.locust_failures) == (push.users, 0)
    assert load.sent_as_scheduled(push)
