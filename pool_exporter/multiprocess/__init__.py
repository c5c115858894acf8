"""Multiprocess mode: the per-worker store, worker liveness, and the directory reader."""

from __future__ import annotations

import os

__all__ = ["directory"]


def directory() -> str | None:
    """The multiprocess directory when this process is one of several workers, else None.

    The one definition of "multiprocess mode": PROMETHEUS_MULTIPROC_DIR, or the lower-case
    name prometheus-client still honours (deprecated), set to a non-empty value. An empty
    value means single-process mode everywhere in pool-exporter.
    """
    legacy = os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or legacy or None
