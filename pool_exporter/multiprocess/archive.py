"""The totals of exited workers, folded into one file so a scrape reads O(live workers) files.

`pool_exporter_archive.json` holds, per pool, the summed counters and histograms of every
stats file folded into it, its counts by route (for pools that count them), and the names of
the folded files that may still exist. Folding happens under an exclusive flock on
`pool_exporter_archive.lock` (the readers take turns): the new archive is written aside (under
an unpredictable name, every byte checked), fsynced, read back and compared, renamed over the
old one, and only then are the folded files deleted. A full disk therefore leaves the old
archive and the files: nothing is lost. A reader killed at any step leaves either the old
archive and the files (nothing counted yet), or the new archive listing files it still finds
(counted once: the next fold deletes them without adding them again).
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
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from pool_exporter.routes import (
    MAX_ROUTES,
    TRACKED_PER_SERIES,
    ZERO,
    RouteTotals,
    Totals,
    add,
    sum_by_name,
)
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
# The routes an archive keeps by name per pool, beyond those the reader serves now: the rest
# are summed without their names (as a worker's beyond its room are), which a reader serves as
# (other) anyway. So exited workers with ever new routes cannot grow the archive without end.
ROUTES_KEPT = TRACKED_PER_SERIES * MAX_ROUTES


@dataclass
class Archive:
    # Per pool, this version's slots (filereader.py) holding the summed counters and
    # histograms; the others are 0 (a gauge belongs to a live worker).
    totals: dict[str, list[float]] = field(default_factory=dict)
    folded: set[str] = field(default_factory=set)
    # Per pool that counts checkouts by route: each route's totals by name, and the rest's;
    # and the most routes its workers served by name (max_routes).
    routes: dict[str, RouteTotals] = field(default_factory=dict)
    route_limits: dict[str, int] = field(default_factory=dict)
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
        routes = raw.get("routes", {})  # none before routes were counted
        if not isinstance(routes, dict):
            raise ValueError("not an archive")
        return Archive(
            totals={str(pool): _from_json(values) for pool, values in pools.items()},
            folded=set(names),
            routes={str(pool): _routes_from_json(r) for pool, r in routes.items()},
            route_limits={str(pool): _natural(r.get("limit", 0)) for pool, r in routes.items()},
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


def _routes_to_json(routes: RouteTotals, limit: int) -> dict[str, Any]:
    named, rest = routes
    return {
        "named": {name: list(t) for name, t in sorted(named.items())},
        "rest": list(rest),
        "limit": limit,
    }


def _routes_from_json(data: object) -> RouteTotals:
    if not isinstance(data, dict) or not isinstance(data.get("named"), dict):
        raise ValueError("routes: not a mapping")
    named = {str(name): _totals(t) for name, t in data["named"].items()}
    return named, _totals(data.get("rest"))


def _totals(value: object) -> Totals:
    if not isinstance(value, list) or len(value) != 3:
        raise ValueError(f"not a route's totals: {value!r}")
    seconds = value[1]
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or seconds < 0:
        raise ValueError(f"not a number of seconds: {seconds!r}")
    return _natural(value[0]), float(seconds), _natural(value[2])


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
        "routes": {
            pool: _routes_to_json(r, archive.route_limits.get(pool, 0))
            for pool, r in sorted(archive.routes.items())
        },
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


Dead = tuple[str, list[float], RouteTotals | None, int]
"""An exited worker's file: its pool, its slots, its counts by route (if it counted them) and
its max_routes (0 if not)."""


def folded(
    archive: Archive,
    dead: dict[str, Dead],
    present: set[str],
    served: Mapping[str, set[str]] | None = None,
) -> Archive:
    """`archive` with `dead` (file name -> Dead) added; `present` is every file name in the
    directory: folded names whose files are gone need no remembering. `served`: per pool, the
    routes the reader serves now, which stay by name (reader.py explains why)."""
    rows = {pool: [slots] for pool, slots in archive.totals.items()}
    routes = dict(archive.routes)
    limits = dict(archive.route_limits)
    for pool, slots, counted, limit in dead.values():
        rows.setdefault(pool, []).append(slots)
        if counted is not None:
            routes[pool] = sum_by_name([routes.get(pool, ({}, ZERO)), counted])
            limits[pool] = max(limits.get(pool, 0), limit)
    totals = {pool: _counted(summed(r)) for pool, r in rows.items()}
    names = {name for name in archive.folded if name in present} | set(dead)
    kept = {pool: _kept(r, (served or {}).get(pool, set())) for pool, r in routes.items()}
    return Archive(totals, names, kept, limits)


def _kept(routes: RouteTotals, served: set[str]) -> RouteTotals:
    """At most ROUTES_KEPT routes by name: the ones served, then the busiest."""
    named, rest = routes
    if len(named) <= ROUTES_KEPT:
        return routes
    order = sorted(named, key=lambda n: (n not in served, -named[n][1], n))
    kept = {n: named[n] for n in order[:ROUTES_KEPT]}
    for name in order[ROUTES_KEPT:]:
        rest = add(rest, named[name])
    return kept, rest


# The slots an archive keeps: the counters' and the histograms'.
_COUNTED = frozenset(i for spec in FIELDS if spec.kind != "gauge" for i in SPANS[spec.name])


def _counted(slots: list[float]) -> list[float]:
    return [v if i in _COUNTED else 0 for i, v in enumerate(slots)]
