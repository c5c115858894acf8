"""The per-worker stats file: a JSON header page, then one 8-byte slot per PoolStats value.

Each worker writes its own file (one writer, no lock): every value is an aligned 8-byte store
into a shared mapping, which a reader on the same machine can never see half-written. A slot
holds an int64 (counts, and gauges declared "int") or a double (sums, timeouts, and gauges
declared "float"): storing a Python int as a double would cost a conversion on every store of
the hot path.

The header names where each value is (`fields`: name -> slot, keys or bucket bounds), so a
reader finds the values of a file written by another version by name: one it does not know is
ignored, one the file lacks is zero, a histogram with other buckets is left at zero. Layout 1
(0.x releases before the header described itself) is read from its slot map kept in
released.py. docs/sidecar.md has the compatibility policy.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from pool_exporter.stats import FIELDS, Capacity, Histogram, PoolStats

from . import released

MAGIC = b"PXSTATS1"
HEADER_BYTES = 4096
VERSION = 2
NAME = re.compile(r"^pool_exporter_(\d+)_([0-9a-f]{16})_(\d+)\.stats$")
# A header that cannot be one of ours; no reader recurses into it (json would, per level).
_MAX_DEPTH = 8
_MAX_SLOTS = (64 << 10) // 8

# The slots before the fields: whether the pool is still instrumented, and its capacity. The
# capacity is three values, so a reader could read half of a new one: CAPACITY_VERSION is odd
# while they are being stored and one more (even) after, and a reader keeps what it read only
# if the version was even and the same after its read (read_file). A size of -1: no capacity.
ACTIVE, CAPACITY_VERSION, SIZE, MAX_OVERFLOW, TIMEOUT = range(5)
_FIRST = 5
_PREFIX = {
    "active": {"at": ACTIVE},
    "capacity_version": {"at": CAPACITY_VERSION},
    "size": {"at": SIZE},
    "max_overflow": {"at": MAX_OVERFLOW},
    "timeout": {"at": TIMEOUT, "float": True},
}

# Where a file's slots are stored: its mapping as a memoryview of int64 or of doubles (two
# views of the same bytes), or a list before a file exists. typeshed's memoryview is generic
# over a single item type, which does not fit a view cast at runtime.
Values = Any


def file_name(pid: int, token: str, seq: int) -> str:
    return f"pool_exporter_{pid}_{token}_{seq}.stats"


def temporary_prefix(pid: int, token: str) -> str:
    """A stats file is written as `<this><random>.tmp`: a reader removes one whose writer
    has exited (TEMPORARY)."""
    return f"pool_exporter_{pid}_{token}_"


# A stats file being written (files.create_temporary), and one of layout 1 (`.stats.new`).
TEMPORARY = re.compile(
    r"^pool_exporter_(\d+)_([0-9a-f]{16})_(?:[0-9a-f]{16}\.tmp|\d+\.stats\.new)$"
)


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
    return at, 1


FIELD_MAP = _describe()
SHAPE = Shape.of(FIELD_MAP, max(sum(_extent(e)) for e in FIELD_MAP.values()))
SLOTS = SHAPE.slots
FILE_BYTES = SHAPE.file_bytes
OFFSETS = {name: entry["at"] for name, entry in FIELD_MAP.items()}


def header(
    pool: str, info: dict[str, str], pid: int, token: str, worker: str | None = None
) -> bytes:
    """The header page: what the values belong to (`worker`: the slot label, slots.py; a
    file without one is labelled by its pid), and where each one is."""
    meta: dict[str, Any] = {
        "pool": pool,
        "info": info,
        "pid": pid,
        "token": token,
        "version": VERSION,
        "slots": SLOTS,
        "fields": FIELD_MAP,
    }
    if worker is not None:
        meta["worker"] = worker
    body = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    page = MAGIC + len(body).to_bytes(8, "little") + body
    if len(page) > HEADER_BYTES:
        raise ValueError(f"pool name and info of {pool!r} do not fit in the stats file header")
    return page.ljust(HEADER_BYTES, b"\0")


def parse_header(page: bytes) -> tuple[dict[str, Any], Shape]:
    """The header's fields and the file's shape; ValueError naming the problem when it is
    not a header this version can read, whatever the bytes are."""
    if len(page) < HEADER_BYTES or page[:8] != MAGIC:
        raise ValueError("not a pool-exporter stats file")
    length = int.from_bytes(page[8:16], "little")
    if not 0 < length <= HEADER_BYTES - 16:
        raise ValueError("corrupt header")
    body = page[16 : 16 + length]
    if _depth(body) > _MAX_DEPTH:
        raise ValueError("corrupt header (nested too deep)")
    try:
        meta = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("corrupt header") from None
    if not isinstance(meta, dict):
        raise ValueError("corrupt header")
    pool, info, pid, token = (meta.get(k) for k in ("pool", "info", "pid", "token"))
    if not (isinstance(pool, str) and isinstance(info, dict) and isinstance(token, str)):
        raise ValueError("corrupt header")
    if not all(isinstance(v, str) for v in info.values()) or not _count(pid) or pid <= 0:  # type: ignore[operator]
        raise ValueError("corrupt header")
    if "fields" in meta:  # layout 2 and later: the header names its slots
        return meta, Shape.of(meta["fields"], meta.get("slots"))
    old = released.FIELDS.get(str(meta.get("layout")))
    if old is None:
        raise ValueError("written by an unknown layout of pool-exporter")
    return meta, Shape.of(old, max(sum(_extent(e)) for e in old.values()))


def _depth(body: bytes) -> int:
    """How deep brackets nest in a JSON text (strings may hold brackets: a bound, not a
    parse)."""
    depth = deepest = 0
    for byte in body:
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        elif byte in b"]}":
            depth -= 1
    return deepest


def _store_all_source() -> str:
    """Python source of `store_all(stats, ints, floats, active)`: one straight line of
    `slot = attribute` per value.

    No call runs between reading an attribute and storing it, so under the GIL no other
    thread runs in between either: a hot-path store of a newer value (from another thread)
    can never be followed by this path's store of an older one. A loop calling getattr()
    could be interrupted there."""
    v = CAPACITY_VERSION
    lines = [
        "def store_all(s, q, d, active):",
        "    cap = s.capacity",
        "    if cap is None:",
        "        size, overflow, timeout = -1, 0, 0.0",
        "    else:",
        "        size, overflow, timeout = cap.size, cap.max_overflow, cap.timeout",
        f"    if (q[{SIZE}], q[{MAX_OVERFLOW}], d[{TIMEOUT}]) != (size, overflow, timeout):",
        f"        q[{v}] = q[{v}] | 1",  # odd: being stored
        f"        q[{SIZE}] = size",
        f"        q[{MAX_OVERFLOW}] = overflow",
        f"        d[{TIMEOUT}] = timeout",
        f"        q[{v}] = (q[{v}] | 1) + 1",  # even again, and another version
    ]
    for field in FIELDS:
        at = OFFSETS[field.name]
        into = "d" if field.number == "float" else "q"
        if field.kind == "histogram":
            n = len(getattr(PoolStats(), field.name).counts)
            lines += [f"    q[{at + i}] = s.{field.name}.counts[{i}]" for i in range(n)]
            lines.append(f"    d[{at + n}] = s.{field.name}.sum")
        elif field.keys:
            lines += [
                f"    {into}[{at + i}] = s.{field.name}[{key!r}]"
                for i, key in enumerate(field.keys)
            ]
        else:
            lines.append(f"    {into}[{at}] = s.{field.name}")
    lines.append(f"    q[{ACTIVE}] = 1 if active else 0")
    return "\n".join(lines) + "\n"


def _compile_store_all() -> Callable[[PoolStats, Values, Values, bool], None]:
    scope: dict[str, Any] = {}
    code = compile(_store_all_source(), "<pool_exporter layout.store_all>", "exec")
    exec(code, scope)
    return scope["store_all"]  # type: ignore[no-any-return]


write: Callable[[PoolStats, Values, Values, bool], None] = _compile_store_all()
write.__doc__ = (
    "Store every value of `stats` (the rare events' path; the hot ones store their own)."
)


def views(buffer: Any) -> tuple[Values, Values]:
    """The int64 and the double view of a file's slots, from its whole mapping or content."""
    slots = memoryview(buffer)[HEADER_BYTES:FILE_BYTES]
    return slots.cast("q"), slots.cast("d")


def read(data: bytes, shape: Shape = SHAPE) -> tuple[PoolStats, bool]:
    """The PoolStats a whole file's content describes (by name: see the module's doc), and
    whether its pool is still instrumented. `data` must be `shape.file_bytes` long."""
    if len(data) != shape.file_bytes:
        raise ValueError("truncated")
    raw = data[HEADER_BYTES:]
    ints = struct.unpack(f"<{shape.slots}q", raw)
    floats = struct.unpack(f"<{shape.slots}d", raw)
    f = shape.fields

    def one(name: str) -> float:
        entry = f.get(name)
        if entry is None:
            return 0
        at: int = entry["at"]
        value: float = floats[at] if entry.get("float") is True else ints[at]
        return value

    stats = PoolStats()
    if "capacity_version" in f:  # layout 2 on
        if one("capacity_version") % 2 == 0 and one("size") >= 0:
            stats.capacity = Capacity(int(one("size")), int(one("max_overflow")), one("timeout"))
    elif one("has_capacity"):  # layout 1, which stored the flag first
        stats.capacity = Capacity(int(one("size")), int(one("max_overflow")), one("timeout"))
    for field in FIELDS:
        entry = f.get(field.name)
        if entry is None:  # added since the file was written
            continue
        at = entry["at"]
        if field.kind == "histogram":
            hist: Histogram = getattr(stats, field.name)
            if entry.get("bounds") == list(hist.bounds):
                n = len(hist.counts)
                hist.counts = list(ints[at : at + n])
                hist.sum = floats[at + n]
        elif field.keys:
            keys = entry.get("keys", [])
            setattr(stats, field.name, {k: _at(ints, at, keys, str(k)) for k in field.keys})
        else:
            setattr(stats, field.name, one(field.name))
    return stats, bool(one("active"))


def read_file(fd: int, shape: Shape = SHAPE) -> tuple[PoolStats, bool]:
    """read() of the file open at `fd`, which its worker may be writing: a capacity read
    while it changed is read again, and left out if it keeps changing (missing, not wrong).
    ValueError when the file is not `shape.file_bytes` long (truncated, say)."""
    version = shape.fields.get("capacity_version")
    for _ in range(3):
        data = os.pread(fd, shape.file_bytes + 1, 0)
        stats, active = read(data, shape)
        if version is None:
            return stats, active
        at = HEADER_BYTES + 8 * version["at"]
        if os.pread(fd, 8, at) == data[at : at + 8]:
            return stats, active
    stats.capacity = None
    return stats, active


def _at(ints: tuple[int, ...], at: int, keys: list[str], key: str) -> int:
    return ints[at + keys.index(key)] if key in keys else 0


# -- a scrape's form: every slot of this version as a list, the same additions as PoolStats.add
# done column by column (a host's live files are summed at every scrape) --


def _doubles(fields: Mapping[str, Mapping[str, Any]]) -> tuple[int, ...]:
    """The slots stored as doubles, as read() reads them: the `float` values and each
    histogram's sum (after its counts, one more than its bounds)."""
    out = {e["at"] for e in fields.values() if e.get("float") is True}
    out |= {e["at"] + len(e["bounds"]) + 1 for e in fields.values() if "bounds" in e}
    return tuple(sorted(out))


_FLOAT_SLOTS = _doubles(FIELD_MAP)


def read_values(fd: int, shape: Shape = SHAPE) -> list[float]:
    """read_file()'s reading as this version's slots, each read as the type it is stored as
    (a file of another version goes through read_file()): a capacity read while it changed
    is read again, and left out (an odd version) if it keeps changing."""
    if shape is not SHAPE and shape != SHAPE:
        stats, active = read_file(fd, shape)
        return of(stats, active)
    size, at = 8 * SLOTS, 8 * CAPACITY_VERSION
    for _ in range(3):
        # The slots only (the header was read when the file was opened), and one byte more:
        # a file that is not exactly FILE_BYTES long is not read.
        data = os.pread(fd, size + 1, HEADER_BYTES)
        if len(data) != size:
            raise ValueError("truncated")
        raw = memoryview(data)
        out = cast("list[float]", raw.cast("q").tolist())  # ints stay ints
        floats = raw.cast("d")
        for i in _FLOAT_SLOTS:
            out[i] = floats[i]
        if os.pread(fd, 8, HEADER_BYTES + at) == data[at : at + 8]:
            return out
    out[CAPACITY_VERSION] = 1
    return out


def capacity(slots: list[float]) -> Capacity | None:
    """The capacity this version's slots hold, as read() decides it."""
    if slots[CAPACITY_VERSION] % 2 or slots[SIZE] < 0:
        return None
    return Capacity(int(slots[SIZE]), int(slots[MAX_OVERFLOW]), slots[TIMEOUT])


def of(stats: PoolStats, active: bool = True) -> list[float]:
    """The slots that would hold `stats`."""
    out: list[float] = [0] * SLOTS
    write(stats, out, out, active)
    return out


def from_values(slots: list[float]) -> PoolStats:
    """The PoolStats that `slots` (values(), of(), or a sum of them) hold."""
    raw = b"".join(struct.pack("<d" if i in _FLOAT_SLOTS else "<q", v) for i, v in enumerate(slots))
    return read(bytes(HEADER_BYTES) + raw)[0]


# -- the archive's form: counters and histograms by field name, robust to a changed list --


def to_json(stats: PoolStats) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in FIELDS:
        value = getattr(stats, field.name)
        if field.kind == "histogram":
            out[field.name] = {
                "bounds": list(value.bounds),
                "counts": value.counts,
                "sum": value.sum,
            }
        elif field.kind == "counter" and field.keys:
            out[field.name] = {str(k): value.get(k, 0) for k in field.keys}
        elif field.kind == "counter":
            out[field.name] = value
    return out


def from_json(data: dict[str, Any]) -> PoolStats:
    """The totals an archive holds; a field it lacks (added since) starts at 0, a histogram
    whose buckets changed since is left at 0 rather than mixing two bucket sets. ValueError
    when a value is not what its field holds."""
    stats = PoolStats()
    for field in FIELDS:
        value = data.get(field.name)
        if value is None:
            continue
        if field.kind == "histogram":
            hist: Histogram = getattr(stats, field.name)
            if value.get("bounds") == list(hist.bounds):
                counts, total = value.get("counts"), value.get("sum")
                if not (isinstance(counts, list) and len(counts) == len(hist.counts)):
                    raise ValueError(f"{field.name}: counts do not match its buckets")
                hist.counts = [_natural(c) for c in counts]
                if not isinstance(total, (int, float)) or isinstance(total, bool):
                    raise ValueError(f"{field.name}: sum is not a number")
                hist.sum = float(total)
        elif field.kind == "counter" and field.keys:
            if not isinstance(value, dict):
                raise ValueError(f"{field.name}: not a mapping")
            setattr(stats, field.name, {k: _natural(value.get(str(k), 0)) for k in field.keys})
        elif field.kind == "counter":
            setattr(stats, field.name, _natural(value))
    return stats


def _natural(value: object) -> int:
    if not _count(value) or value < 0:  # type: ignore[operator]
        raise ValueError(f"not a count: {value!r}")
    return value  # type: ignore[return-value]
