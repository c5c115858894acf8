"""gunicorn server hooks for multiprocess mode: `child_exit = pool_exporter.gunicorn.child_exit`.

Not required: the liveness locks (liveness.py) already drop a dead worker's gauges at the next
scrape. The hook only does it at once, and covers workers that never instrumented a pool.
"""

from __future__ import annotations

from typing import Any

from pool_exporter.multiprocess import liveness


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn calls this in the master when a worker has exited, however it exited."""
    liveness.forget(worker.pid)
