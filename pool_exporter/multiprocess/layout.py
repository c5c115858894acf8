"""Where each value is in a stats file: this version's slot map, and the shape of any version's.

A stats file is a header page (header.py) of HEADER_BYTES, then one 8-byte slot per value of
PoolStats. A slot holds an int64 (counts, and gauges declared "int") or a double (sums,
timeouts, and gauges declared "float"): storing a Python int as a double would cost a
conversion on every store of the hot path.

The slot map names where each value is (name -> `at`, its first slot, with the `keys` of a
dict value or the `bounds` of a histogram, and `float` for a double), and the header carries
it, so a reader finds the values of a file written by another version by name: one it does
not know is ignored, one the file lacks is what a new pool's stats hold (zero, or a setting
not set), a histogram with other buckets is left at zero. Layout 1 (0.x releases before the
header described itself) is read from its slot map kept in layout1.py. docs/sidecar.md has
the compatibility policy.

A pool that counts its checkouts by route (`instrument(engine, route=...)`) has a route region
after the fields, named `routes` in the slot map: the totals of the routes not kept by name
(ROUTE_VALUES slots), then `entries` entries of ENTRY_SLOTS each: the name's length in bytes
(0: unused; stored after the name), the name (UTF-8, NAME_SLOTS slots), and the route's values.
A reader that does not know the region skips it as one more unknown value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pool_exporter.stats import FIELDS, PoolStats

from . import layout1

HEADER_BYTES = 4096
# The layout this version writes: 2, the first whose header names its slots.
VERSION = 2
_MAX_SLOTS = (64 << 10) // 8

# The slots before the fields: whether the pool is still instrumented, and its capacity. The
# capacity is three values, so a reader could read half of a new one: CAPACITY_VERSION is odd
# while they are being stored and one more (even) after, and a reader keeps what it read only
# if the version was even and the same after its read (filereader.py). A size of -1: no
# capacity.
ACTIVE, CAPACITY_VERSION, SIZE, MAX_OVERFLOW, TIMEOUT = range(5)
_FIRST = 5
_PREFIX = {
    "active": {"at": ACTIVE},
    "capacity_version": {"at": CAPACITY_VERSION},
    "size": {"at": SIZE},
    "max_overflow": {"at": MAX_OVERFLOW},
    "timeout": {"at": TIMEOUT, "float": True},
}


# A route's values, in every entry and in the untracked totals: checkouts, connection-seconds
# held (a double), waited checkouts.
ROUTE_CHECKOUTS, ROUTE_SECONDS, ROUTE_WAITED = range(3)
ROUTE_VALUES = 3
NAME_SLOTS = 16  # 128 bytes: routes.ROUTE_BYTES
ENTRY_LENGTH, ENTRY_NAME, ENTRY_VALUES = 0, 1, 1 + NAME_SLOTS
ENTRY_SLOTS = ENTRY_VALUES + ROUTE_VALUES


def route_region(entries: int) -> dict[str, Any]:
    """The slot map's entry of a route region of `entries` routes, right after the fields."""
    return {"at": SLOTS, "entries": entries, "entry_slots": ENTRY_SLOTS, "name_slots": NAME_SLOTS}


def with_routes(entries: int) -> Shape:
    """The shape of this version's file with a route region of `entries` routes (none: 0)."""
    if not entries:
        return SHAPE
    return Shape.fitting({**SLOT_MAP, "routes": route_region(entries)})


def _describe() -> dict[str, dict[str, Any]]:
    """This version's slot map, by name: what the header says and every reader follows."""
    proto = PoolStats()
    fields: dict[str, dict[str, Any]] = {name: dict(e) for name, e in _PREFIX.items()}
    at = _FIRST
    for field in FIELDS:
        value = getattr(proto, field.name)
        if field.kind == "histogram":
            fields[field.name] = {"at": at, "bounds": list(value.bounds)}
            at += len(value.counts) + 1  # the counts, then the sum
        elif field.keys:
            fields[field.name] = {"at": at, "keys": [str(k) for k in field.keys]}
            at += len(field.keys)
        else:
            fields[field.name] = (
                {"at": at, "float": True} if field.number == "float" else {"at": at}
            )
            at += 1
    return fields


@dataclass(frozen=True)
class Shape:
    """A file's slot map, checked: how many slots it has and where each named value is."""

    fields: Mapping[str, Mapping[str, Any]]
    slots: int

    @property
    def file_bytes(self) -> int:
        return HEADER_BYTES + 8 * self.slots

    @classmethod
    def of(cls, fields: object, slots: object) -> Shape:
        """The shape a header describes; ValueError unless every slot it names is inside
        the file."""
        if not isinstance(fields, dict) or not _count(slots) or not 0 < slots <= _MAX_SLOTS:  # type: ignore[operator]
            raise ValueError("corrupt slot map")
        for entry in fields.values():
            at, width = _extent(entry)
            if at < 0 or at + width > slots:  # type: ignore[operator]
                raise ValueError("slot map outside the file")
        return cls(fields, int(slots))  # type: ignore[call-overload]

    @classmethod
    def fitting(cls, fields: dict[str, Any]) -> Shape:
        """The shape of a slot map whose file ends with its last value."""
        return cls.of(fields, max(sum(_extent(e)) for e in fields.values()))


def shape_of(meta: dict[str, Any]) -> Shape:
    """The shape of a file whose header says `meta`: the slot map it carries (layout 2 on),
    or the one of the released layout it names; ValueError when it is neither."""
    if "fields" in meta:
        return Shape.of(meta["fields"], meta.get("slots"))
    released = layout1.BY_SIGNATURE.get(str(meta.get("layout")))
    if released is None:
        raise ValueError("written by an unknown layout of pool-exporter")
    return Shape.fitting(released)


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _numbers(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value
    )


def _extent(entry: object) -> tuple[int, int]:
    """An entry's first slot and its width."""
    if not isinstance(entry, dict) or not _count(entry.get("at")):
        raise ValueError("corrupt slot map")
    at: int = entry["at"]
    if "bounds" in entry:
        if not _numbers(entry["bounds"]):
            raise ValueError("corrupt slot map")
        return at, len(entry["bounds"]) + 2  # the counts, +Inf's, then the sum
    if "keys" in entry:
        keys = entry["keys"]
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise ValueError("corrupt slot map")
        return at, len(keys)
    if "entries" in entry:
        entries, width = entry["entries"], entry.get("entry_slots")
        if not (_count(entries) and _count(width)):
            raise ValueError("corrupt slot map")
        if int(entries) < 0 or int(width) <= ROUTE_VALUES:  # type: ignore[arg-type]
            raise ValueError("corrupt slot map")
        return at, ROUTE_VALUES + int(entries) * int(width)  # type: ignore[arg-type]
    return at, 1


SLOT_MAP = _describe()
_EXTENTS = {name: _extent(entry) for name, entry in SLOT_MAP.items()}
SHAPE = Shape.fitting(SLOT_MAP)
SLOTS = SHAPE.slots
FILE_BYTES = SHAPE.file_bytes
OFFSETS = {name: entry["at"] for name, entry in SLOT_MAP.items()}
# Every slot of each value, by name.
SPANS = {name: range(at, at + width) for name, (at, width) in _EXTENTS.items()}
