"""The totals of exited workers, folded into one file so a scrape reads O(live workers) files.

`pool_exporter_archive.json` holds, per pool, the summed counters and histograms of every
stats file folded into it, and the names of the folded files that may still exist. Folding
happens under an exclusive flock on `pool_exporter_archive.lock` (the readers take turns):
the new archive is written aside, fsynced and renamed over the old one, and only then are
the folded files deleted. A reader killed at any step leaves either the old archive and the
files (nothing counted yet), or the new archive listing files it still finds (counted once:
the next fold deletes them without adding them again).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from pool_exporter.stats import PoolStats

from . import layout
from .files import BadFiles, read_regular

NAME = "pool_exporter_archive.json"
LOCK = "pool_exporter_archive.lock"
MAX_BYTES = 64 << 20
_LOCK_TIMEOUT = 10.0


@dataclass
class Archive:
    totals: dict[str, PoolStats] = field(default_factory=dict)
    folded: set[str] = field(default_factory=set)
    # False when the file exists but cannot be trusted: then nothing is folded into it.
    sound: bool = True


class Busy(Exception):
    """Another reader held the archive lock for longer than a scrape may wait."""


@contextlib.contextmanager
def locked(directory: str) -> Iterator[None]:
    """The archive lock, waited for at most a few seconds (a reader killed holding it frees
    it at once: the kernel drops a dead process's flocks)."""
    path = os.path.join(directory, LOCK)
    # Read-only is enough for flock, and works on a lock file another user's reader created.
    fd = os.open(
        path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644
    )
    try:
        deadline = time.monotonic() + _LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise Busy(f"{path} stayed locked for {_LOCK_TIMEOUT:.0f} s") from None
                time.sleep(0.005)
        yield
    finally:
        os.close(fd)


class Reader:
    """Reads the archive, again only when the file changed."""

    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, NAME)
        self._seen: tuple[int, int, int] | None = None
        self._archive = Archive()

    def load(self, bad: BadFiles) -> Archive:
        try:
            st = os.stat(self.path, follow_symlinks=False)
        except FileNotFoundError:
            self._seen, self._archive = None, Archive()
            return self._archive
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._seen and self._archive.sound:
            return self._archive
        data = read_regular(self.path, bad, MAX_BYTES)
        archive = Archive(sound=False)
        if data is not None:
            try:
                archive = _parse(data)
            except (ValueError, TypeError, KeyError, AttributeError):
                bad(self.path, "format")
        self._seen, self._archive = key, archive
        return archive

    def replace(self, directory: str, archive: Archive) -> None:
        """Write `archive` (the lock held) and remember it, saving the next load a parse."""
        write(directory, archive)
        st = os.stat(self.path, follow_symlinks=False)
        self._seen, self._archive = (st.st_ino, st.st_mtime_ns, st.st_size), archive


def _parse(data: bytes) -> Archive:
    raw = json.loads(data)
    return Archive(
        totals={pool: layout.from_json(values) for pool, values in raw["pools"].items()},
        folded=set(raw["folded"]),
    )


def write(directory: str, archive: Archive) -> None:
    """Replace the archive atomically and durably (call with the lock held)."""
    body = {
        "pools": {pool: layout.to_json(s) for pool, s in sorted(archive.totals.items())},
        "folded": sorted(archive.folded),
    }
    final = os.path.join(directory, NAME)
    tmp = f"{final}.{os.getpid()}.new"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        os.write(fd, json.dumps(body, separators=(",", ":")).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, final)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash of the machine
    finally:
        os.close(dir_fd)


def folded(archive: Archive, dead: dict[str, tuple[str, PoolStats]], present: set[str]) -> Archive:
    """`archive` with `dead` (file name -> pool, stats) added; `present` is every file name
    in the directory: folded names whose files are gone need no remembering."""
    totals = {pool: _copy(s) for pool, s in archive.totals.items()}
    for pool, stats in dead.values():
        totals.setdefault(pool, PoolStats()).add(stats)
    names = {name for name in archive.folded if name in present} | set(dead)
    return Archive(totals, names)


def _copy(stats: PoolStats) -> PoolStats:
    out = PoolStats()
    out.add(stats)
    return out
