"""Multiprocess-mode helpers: the stats files in a directory, what a reader serves, a worker
killed the hard way."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from pool_exporter.multiprocess import filereader, header, layout
from pool_exporter.multiprocess.reader import WorkersCollector
from pool_exporter.multiprocess.store import MultiprocessPoolStats
from pool_exporter.stats import FIELDS, PoolStats

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


def scrape_within(collector: WorkersCollector, seconds: float = 20.0) -> Samples:
    """A scrape, failing the test if it does not finish in time (a FIFO would block it)."""
    result: list[Samples] = []
    thread = threading.Thread(target=lambda: result.append(scrape(collector)), daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"the scrape did not finish within {seconds} s"
    return result[0]


def scrape(collector: WorkersCollector) -> Samples:
    """What one scrape of `collector` serves, parsed."""
    registry = CollectorRegistry()
    registry.register(collector)
    return parse(generate_latest(registry).decode())


def read_stats_file(path: str) -> tuple[dict[str, Any], PoolStats, bool]:
    """A stats file's header, its values, and whether its pool is still instrumented, read
    as a reader reads them (filereader.read)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        meta, shape = header.parse(os.pread(fd, layout.HEADER_BYTES, 0))
        slots = filereader.read(fd, filereader.decoder(shape))
    finally:
        os.close(fd)
    return meta, filereader.to_stats(slots), bool(slots[layout.ACTIVE])


def file_values(stats: MultiprocessPoolStats) -> PoolStats:
    """What `stats`' file holds now, read as a reader reads it."""
    assert stats.path is not None
    meta, values, _ = read_stats_file(stats.path)
    assert meta["pool"] == stats.name
    return values


def same_fields(a: PoolStats, b: PoolStats) -> None:
    """Every field of `a` equals `b`'s."""
    for field in FIELDS:
        x, y = getattr(a, field.name), getattr(b, field.name)
        if field.kind == "histogram":
            assert (x.counts, x.sum) == (y.counts, y.sum), field.name
        else:
            assert x == y, field.name
