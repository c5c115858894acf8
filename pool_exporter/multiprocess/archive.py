"""The totals of exited workers, folded into one file so a scrape reads O(live workers) files.

`pool_exporter_archive.json` holds, per pool, the summed counters and histograms of every
stats file folded into it, and the names of the folded files that may still exist. Folding
happens under an exclusive flock on `pool_exporter_archive.lock` (the readers take turns):
the new archive is written aside (under an unpredictable name, every byte checked), fsynced,
read back and compared, renamed over the old one, and only then are the folded files
deleted. A full disk therefore leaves the old archive and the files: nothing is lost. A
reader killed at any step leaves either the old archive and the files (nothing counted yet),
or the new archive listing files it still finds (counted once: the next fold deletes them
without adding them again).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pool_exporter.stats import FIELDS

from .filereader import summed
from .files import (
    BadFiles,
    NotRegular,
    create_temporary,
    open_lock_file,
    read_regular,
    remove,
    sync_directory,
    write_all,
)
from .layout import OFFSETS, SLOT_MAP, SLOTS, SPANS

NAME = "pool_exporter_archive.json"
LOCK = "pool_exporter_archive.lock"
MAX_BYTES = 64 << 20
_LOCK_TIMEOUT = 10.0


@dataclass
class Archive:
    # Per pool, this version's slots (filereader.py) holding the summed counters and
    # histograms; the others are 0 (a gauge belongs to a live worker).
    totals: dict[str, list[float]] = field(default_factory=dict)
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
    fd = _open_lock(path)
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


def _open_lock(path: str) -> int:
    """The archive lock's descriptor. Only a reader creates that file, as a regular file: a
    link or a FIFO planted at its name is removed rather than followed or waited on."""
    for _ in range(3):
        try:
            return open_lock_file(path)
        except NotRegular:
            remove(path)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            remove(path)
    raise OSError(errno.EEXIST, f"{path} keeps being replaced by something not a lock file")


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
        if not stat.S_ISREG(st.st_mode):
            # Not written by a reader (they rename a regular file there): no totals of ours
            # are in it, and the next fold renames a real archive over it.
            bad(self.path, "symlink" if stat.S_ISLNK(st.st_mode) else "not_regular")
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
            except ValueError:
                bad(self.path, "format")
        self._seen, self._archive = key, archive
        return archive

    def replace(self, directory: str, archive: Archive) -> None:
        """Write `archive` (the lock held) and remember it, saving the next load a parse."""
        write(directory, archive)
        st = os.stat(self.path, follow_symlinks=False)
        self._seen, self._archive = (st.st_ino, st.st_mtime_ns, st.st_size), archive


def _parse(data: bytes) -> Archive:
    """The archive `data` holds; ValueError for anything else, whatever the bytes."""
    try:
        raw = json.loads(data)
        pools, names = raw["pools"], raw["folded"]
        if not isinstance(pools, dict) or not isinstance(names, list):
            raise ValueError("not an archive")
        if not all(isinstance(n, str) for n in names):
            raise ValueError("not an archive")
        return Archive(
            totals={str(pool): _from_json(values) for pool, values in pools.items()},
            folded=set(names),
        )
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise ValueError(f"not an archive: {type(exc).__name__}") from None


# -- the archive's form: counters and histograms by field name, robust to a changed list --


def _to_json(slots: list[float]) -> dict[str, Any]:
    """The counters and histograms of this version's `slots`, by field name."""
    out: dict[str, Any] = {}
    for spec in FIELDS:
        at = OFFSETS[spec.name]
        if spec.kind == "histogram":
            bounds = SLOT_MAP[spec.name]["bounds"]
            n = len(bounds) + 1
            out[spec.name] = {"bounds": bounds, "counts": slots[at : at + n], "sum": slots[at + n]}
        elif spec.kind == "counter" and spec.keys:
            out[spec.name] = {str(k): slots[at + i] for i, k in enumerate(spec.keys)}
        elif spec.kind == "counter":
            out[spec.name] = slots[at]
    return out


def _from_json(data: dict[str, Any]) -> list[float]:
    """The totals an archive holds, as this version's slots; a field it lacks (added since)
    starts at 0, a histogram whose buckets changed since is left at 0 rather than mixing two
    bucket sets. ValueError when a value is not what its field holds."""
    out: list[float] = [0] * SLOTS
    for spec in FIELDS:
        value = data.get(spec.name)
        if value is None:
            continue
        at = OFFSETS[spec.name]
        if spec.kind == "histogram":
            bounds = SLOT_MAP[spec.name]["bounds"]
            if value.get("bounds") == bounds:
                n = len(bounds) + 1
                counts, total = value.get("counts"), value.get("sum")
                if not (isinstance(counts, list) and len(counts) == n):
                    raise ValueError(f"{spec.name}: counts do not match its buckets")
                out[at : at + n] = [_natural(c) for c in counts]
                if not isinstance(total, (int, float)) or isinstance(total, bool):
                    raise ValueError(f"{spec.name}: sum is not a number")
                out[at + n] = float(total)
        elif spec.kind == "counter" and spec.keys:
            if not isinstance(value, dict):
                raise ValueError(f"{spec.name}: not a mapping")
            for i, k in enumerate(spec.keys):
                out[at + i] = _natural(value.get(str(k), 0))
        elif spec.kind == "counter":
            out[at] = _natural(value)
    return out


def _natural(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"not a count: {value!r}")
    return value


def write(directory: str, archive: Archive) -> None:
    """Replace the archive atomically and durably (call with the lock held); OSError, and
    the old archive untouched, when the new one cannot be written whole."""
    body = {
        "pools": {pool: _to_json(s) for pool, s in sorted(archive.totals.items())},
        "folded": sorted(archive.folded),
    }
    data = json.dumps(body, separators=(",", ":")).encode()
    fd, tmp = create_temporary(directory, TEMPORARY_PREFIX)
    try:
        try:
            write_all(fd, data)
            os.fsync(fd)
            if os.pread(fd, len(data) + 1, 0) != data:
                raise OSError(errno.EIO, "the archive written aside reads back differently")
        finally:
            os.close(fd)
        os.rename(tmp, os.path.join(directory, NAME))
    except BaseException:
        remove(tmp)
        raise
    sync_directory(directory)  # the rename itself survives a crash of the machine


# The archive is written aside as `<this><random>.tmp`, and was as `<NAME>.<pid>.new`.
TEMPORARY_PREFIX = "pool_exporter_archive."
_TEMPORARY = re.compile(r"^pool_exporter_archive\.(?:[0-9a-f]{16}\.tmp|json\.\d+\.new)$")


def remove_temporaries(directory: str, names: list[str]) -> None:
    """Remove archives written aside and never renamed, of the directory's listing `names`
    (call with the lock held: whoever wrote one held it too, so it is a dead reader's)."""
    for name in names:
        if _TEMPORARY.match(name):
            remove(os.path.join(directory, name))


def folded(
    archive: Archive, dead: dict[str, tuple[str, list[float]]], present: set[str]
) -> Archive:
    """`archive` with `dead` (file name -> pool, slots) added; `present` is every file name
    in the directory: folded names whose files are gone need no remembering."""
    rows = {pool: [slots] for pool, slots in archive.totals.items()}
    for pool, slots in dead.values():
        rows.setdefault(pool, []).append(slots)
    totals = {pool: _counted(summed(r)) for pool, r in rows.items()}
    names = {name for name in archive.folded if name in present} | set(dead)
    return Archive(totals, names)


# The slots an archive keeps: the counters' and the histograms'.
_COUNTED = frozenset(i for spec in FIELDS if spec.kind != "gauge" for i in SPANS[spec.name])


def _counted(slots: list[float]) -> list[float]:
    return [v if i in _COUNTED else 0 for i, v in enumerate(slots)]
