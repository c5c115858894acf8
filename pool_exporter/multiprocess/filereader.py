"""Reading one worker's stats file: its slots as this version's, whatever version wrote them.

Every file a reader meets (a live worker's, an exited one's, one of another layout) is read
the same way: read() preads its slots (never a mapping: a file truncated meanwhile is a short
read, never a SIGBUS), with one retry for a capacity being stored, and a Decoder, made once
per shape, turns them into this version's slots by name (layout.py says what by name means).
A reader then holds a worker as a list of numbers, one per slot of this version: what the
hot path stored, in the type it stored it. capacity() and to_stats() say what such a list
holds, and routes() the route region of a pool that counts checkouts by route.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, cast

from pool_exporter.routes import ZERO, RouteTotals, Totals, add
from pool_exporter.stats import FIELDS, Capacity, Histogram, PoolStats

from . import layout
from .layout import CAPACITY_VERSION, HEADER_BYTES, MAX_OVERFLOW, OFFSETS, SIZE, TIMEOUT


def _doubles(fields: Mapping[str, Mapping[str, Any]]) -> tuple[int, ...]:
    """The slots stored as doubles: the `float` values and each histogram's sum (after its
    counts, one more than its bounds)."""
    out = {e["at"] for e in fields.values() if e.get("float") is True}
    out |= {e["at"] + len(e["bounds"]) + 1 for e in fields.values() if "bounds" in e}
    return tuple(sorted(out))


_DOUBLES = _doubles(layout.SLOT_MAP)


def _absent() -> list[float]:
    """This version's slots as a reader takes them from a file that lacks every value: what
    a new pool's stats hold (0, but -1 for a pool_recycle not set, as PoolStats has it)."""
    fresh = PoolStats()
    out: list[float] = [0] * layout.SLOTS
    for field in FIELDS:
        if field.kind != "histogram" and not field.keys:
            out[OFFSETS[field.name]] = getattr(fresh, field.name)
    return out


_ABSENT = _absent()


class Decoder:
    """How the slots of a file of one shape become this version's: as they are for this
    version's files; by name for another's, where a value the file lacks is what a new
    PoolStats holds (_absent: a setting it predates is not set), a key it does not have and a
    histogram with other buckets are zero, and a value this version does not know is left
    out."""

    __slots__ = (
        "_capacity_flag",
        "_copies",
        "current",
        "route_entries",
        "routes_at",
        "size",
        "version_at",
    )

    def __init__(self, shape: layout.Shape) -> None:
        self.size = 8 * shape.slots  # bytes
        fields = shape.fields
        region = fields.get("routes")
        # The route region (layout.route_region), if the file has one: its entry.
        self.routes_at: Mapping[str, Any] | None = region
        self.route_entries: int = region["entries"] if region is not None else 0
        # This version's fields where this version puts them (a route region may follow).
        self.current = all(fields.get(k) == v for k, v in layout.SLOT_MAP.items()) and set(
            fields
        ) <= {*layout.SLOT_MAP, "routes"}
        version = fields.get("capacity_version")
        # Where the capacity's version is among the slots, in bytes (read again: read()).
        self.version_at: int | None = None if version is None else 8 * version["at"]
        # (this version's slot, the file's slot, stored as a double) of each value.
        self._copies: list[tuple[int, int, bool]] = []
        # Layout 1 stored a flag for "has a capacity" where the version is now: its slot, or
        # -1 for a file with neither (no capacity). None: the file has a version.
        self._capacity_flag: int | None = None
        if self.current:
            return
        if version is None:
            flag = fields.get("has_capacity")
            self._capacity_flag = -1 if flag is None else flag["at"]
        for name, mine in layout.SLOT_MAP.items():
            theirs = fields.get(name)
            if theirs is not None:
                self._copies += _copies(mine, theirs)

    def decode(self, raw: bytes) -> list[float]:
        """This version's slots from the file's slots `raw` (`size` bytes)."""
        view = memoryview(raw)
        ints, doubles = view.cast("q"), view.cast("d")
        if self.current:
            out = cast("list[float]", ints[: layout.SLOTS].tolist())  # ints stay ints
            for i in _DOUBLES:
                out[i] = doubles[i]
            return out
        out = list(_ABSENT)
        for to, at, double in self._copies:
            out[to] = doubles[at] if double else ints[at]
        flag = self._capacity_flag
        if flag is not None and (flag < 0 or not ints[flag]):
            out[SIZE] = -1
        return out

    def routes(self, raw: bytes) -> RouteTotals | None:
        """The route region's totals from the file's slots `raw`: each named route's, and
        those of the routes not kept by name; None for a file without one. An entry whose
        name is not whole (a length past the name's room, or bytes that are not UTF-8) is
        added to the unnamed ones rather than given a name."""
        region = self.routes_at
        if region is None:
            return None
        view = memoryview(raw)
        ints, doubles = view.cast("q"), view.cast("d")
        at, width, room = region["at"], region["entry_slots"], 8 * region.get("name_slots", 0)
        values = width - layout.ROUTE_VALUES  # where an entry's values start

        def totals(base: int) -> Totals:
            return (
                ints[base + layout.ROUTE_CHECKOUTS],
                doubles[base + layout.ROUTE_SECONDS],
                ints[base + layout.ROUTE_WAITED],
            )

        rest = totals(at)
        named: dict[str, Totals] = {}
        for n in range(region["entries"]):
            entry = at + layout.ROUTE_VALUES + n * width
            length = ints[entry + layout.ENTRY_LENGTH]
            if length == 0:
                continue
            found = totals(entry + values)
            try:
                if not 0 < length <= room:
                    raise ValueError("name too long")
                start = 8 * (entry + layout.ENTRY_NAME)
                name = bytes(raw[start : start + length]).decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                rest = add(rest, found)
                continue
            named[name] = add(named.get(name, ZERO), found)
        return named, rest


def _copies(mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> list[tuple[int, int, bool]]:
    """The slots to copy for one value, this version's entry `mine` and the file's
    `theirs` (both checked by layout.Shape)."""
    to, at = mine["at"], theirs["at"]
    if "bounds" in mine:
        if theirs.get("bounds") != mine["bounds"]:
            return []  # other buckets: left at zero rather than mixing two bucket sets
        n = len(mine["bounds"]) + 1  # the counts, +Inf's included; then the sum
        return [(to + i, at + i, False) for i in range(n)] + [(to + n, at + n, True)]
    if "keys" in mine:
        keys = theirs.get("keys", [])
        pairs = [(i, keys.index(k)) for i, k in enumerate(mine["keys"]) if k in keys]
        return [(to + i, at + j, False) for i, j in pairs]
    return [(to, at, theirs.get("float") is True)]


CURRENT = Decoder(layout.SHAPE)


def decoder(shape: layout.Shape) -> Decoder:
    """The Decoder of files of `shape` (this version's, shared, for most)."""
    return CURRENT if shape == layout.SHAPE else Decoder(shape)


def read(fd: int, decoder: Decoder = CURRENT) -> list[float]:
    """This version's slots from the file open at `fd`, which its worker may be writing: a
    capacity read while it changed is read again, and left out (an odd CAPACITY_VERSION) if
    it keeps changing: missing, not wrong. ValueError when the file is not as long as its
    shape says (truncated, say)."""
    return read_all(fd, decoder)[0]


def read_all(fd: int, decoder: Decoder = CURRENT) -> tuple[list[float], RouteTotals | None]:
    """read()'s slots, and the file's route totals (Decoder.routes) from the same read."""
    size, at = decoder.size, decoder.version_at
    for _ in range(3):
        # The slots only (the header was read when the file was opened), and one byte more:
        # a file that is not exactly as long as its shape says is not read.
        data = os.pread(fd, size + 1, HEADER_BYTES)
        if len(data) != size:
            raise ValueError("truncated")
        slots = decoder.decode(data)
        if at is None or os.pread(fd, 8, HEADER_BYTES + at) == data[at : at + 8]:
            return slots, decoder.routes(data)
    slots[CAPACITY_VERSION] = 1
    return slots, decoder.routes(data)


def capacity(slots: Sequence[float]) -> Capacity | None:
    """The capacity `slots` hold: none while one is being stored, nor for a size of -1."""
    if slots[CAPACITY_VERSION] % 2 or slots[SIZE] < 0:
        return None
    return Capacity(int(slots[SIZE]), int(slots[MAX_OVERFLOW]), slots[TIMEOUT])


def summed(rows: list[list[float]]) -> list[float]:
    """The slots of several workers added up, column by column (in C: a host's live files
    are summed at every scrape). Only the counters' and histograms' sums mean something."""
    return [sum(column) for column in zip(*rows, strict=True)]


def to_stats(slots: Sequence[float]) -> PoolStats:
    """The PoolStats that `slots` (read(), or a sum of several) hold."""
    stats = PoolStats()
    stats.capacity = capacity(slots)
    for field in FIELDS:
        at = OFFSETS[field.name]
        if field.kind == "histogram":
            hist: Histogram = getattr(stats, field.name)
            n = len(hist.counts)
            hist.counts = cast("list[int]", list(slots[at : at + n]))
            hist.sum = slots[at + n]
        elif field.keys:
            setattr(stats, field.name, {k: slots[at + i] for i, k in enumerate(field.keys)})
        else:
            setattr(stats, field.name, slots[at])
    return stats
