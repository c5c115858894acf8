"""Multiprocess-mode helpers: the stats files in a directory, what a reader serves, a worker
killed the hard way."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from pool_exporter.multiprocess.reader import WorkersCollector

from .procs import Samples, parse, wait_until


def stats_files(directory: Path, pid: int | None = None) -> list[str]:
    """The pool stats files in `directory` (of one pid), by name."""
    prefix = "pool_exporter_" if pid is None else f"pool_exporter_{pid}_"
    return sorted(
        p.name for p in directory.iterdir() if p.name.startswith(prefix) and p.suffix == ".stats"
    )


def merged(directory: Path) -> Samples:
    """What a scrape of the directory serves (reaping first, as the sidecar does)."""
    return scrape(WorkersCollector(str(directory)))


def kill9(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    # The writer's child is not ours to wait for; its lock goes when the kernel reaps it.
    wait_until(lambda: not alive(pid), what=f"pid {pid} to die")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet waited for) has released its locks already
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except FileNotFoundError:
        return False


def scrape(collector: WorkersCollector) -> Samples:
    """What one scrape of `collector` serves, parsed."""
    registry = CollectorRegistry()
    registry.register(collector)
    return parse(generate_latest(registry).decode())
