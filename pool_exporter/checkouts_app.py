"""An in-app WSGI endpoint listing the connections each pool of this process has out now."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from .instrument import current_checkouts


def report() -> dict[str, list[dict[str, Any]]]:
    """{pool: [{age_seconds, site, thread, task, long}, ...]}, oldest first. Code locations and
    names only: never SQL, parameters or connection URLs."""
    return {
        pool: [
            {
                "age_seconds": round(c.age, 3),
                "site": str(c.site) if c.site else None,
                "thread": c.thread,
                "task": c.task,
                "long": c.long,
            }
            for c in found
        ]
        for pool, found in current_checkouts().items()
    }


def make_checkouts_wsgi_app() -> Callable[[dict[str, Any], Any], Iterable[bytes]]:
    """A WSGI app answering every GET with `report()` as JSON. It shows the process that
    serves the request, so under several workers each answer is one worker's view; mount it
    where only operators can reach it (it names source files and functions)."""

    def app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        body = json.dumps(report(), indent=1).encode()
        start_response(
            "200 OK",
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app
