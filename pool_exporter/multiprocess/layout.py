"""The per-worker stats file: a JSON header page, then one 8-byte slot per PoolStats value.

Each worker writes its own file (one writer, no lock): every value is an aligned 8-byte store
into a shared mapping, which a reader on the same machine can never see half-written. The
order of the values follows stats.FIELDS, so a new PoolStats field only extends that list;
the header's `layout` signature tells a reader that a file was written by another layout.
A slot holds an int64 (counts, and gauges declared "int") or a double (sums, timeouts, and
gauges declared "float"): storing a Python int as a double would cost a conversion on every
store of the hot path.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from pool_exporter.stats import FIELDS, Capacity, Field, Histogram, PoolStats

MAGIC = b"PXSTATS1"
HEADER_BYTES = 4096
NAME = re.compile(r"^pool_exporter_(\d+)_([0-9a-f]{16})_(\d+)\.stats$")

# The slots before the fields: whether the pool is still instrumented, and its capacity.
ACTIVE, HAS_CAPACITY, SIZE, MAX_OVERFLOW, TIMEOUT = range(5)
_FIRST = 5


# Where a file's slots are stored: its mapping as a memoryview of int64 or of doubles (two
# views of the same bytes), or a list before a file exists. typeshed's memoryview is generic
# over a single item type, which does not fit a view cast at runtime.
Values = Any


def file_name(pid: int, token: str, seq: int) -> str:
    return f"pool_exporter_{pid}_{token}_{seq}.stats"


def _width(field: Field, proto: PoolStats) -> int:
    if field.kind == "histogram":
        return len(getattr(proto, field.name).counts) + 1  # the counts, then the sum
    return len(field.keys) or 1


def _layout() -> tuple[dict[str, int], int, frozenset[int], str]:
    proto = PoolStats()
    offsets: dict[str, int] = {}
    floats = {TIMEOUT}
    at = _FIRST
    shape: list[object] = []
    for field in FIELDS:
        offsets[field.name] = at
        width = _width(field, proto)
        shape.append((field.name, field.kind, field.number, [str(k) for k in field.keys], width))
        if field.kind == "histogram":
            shape.append(list(getattr(proto, field.name).bounds))
            floats.add(at + width - 1)
        elif field.number == "float":
            floats.update(range(at, at + width))
        at += width
    signature = hashlib.sha256(json.dumps(shape).encode()).hexdigest()[:16]
    return offsets, at, frozenset(floats), signature


OFFSETS, SLOTS, FLOATS, SIGNATURE = _layout()
FILE_BYTES = HEADER_BYTES + 8 * SLOTS


def header(pool: str, info: dict[str, str], pid: int, token: str, worker: str) -> bytes:
    """The header page: what the values belong to (`worker`: the slot label, slots.py)."""
    meta = {
        "pool": pool, "info": info, "pid": pid, "token": token, "worker": worker,
        "layout": SIGNATURE,
    }  # fmt: skip
    body = json.dumps(meta, sort_keys=True).encode()
    page = MAGIC + len(body).to_bytes(8, "little") + body
    if len(page) > HEADER_BYTES:
        raise ValueError(f"pool name and info of {pool!r} do not fit in the stats file header")
    return page.ljust(HEADER_BYTES, b"\0")


def parse_header(page: bytes) -> dict[str, Any]:
    """The header's fields; ValueError naming the problem when it is not one of ours."""
    if len(page) < HEADER_BYTES or page[:8] != MAGIC:
        raise ValueError("not a pool-exporter stats file")
    length = int.from_bytes(page[8:16], "little")
    if not 0 < length <= HEADER_BYTES - 16:
        raise ValueError("corrupt header")
    meta = json.loads(page[16 : 16 + length])
    if not isinstance(meta, dict) or meta.get("layout") != SIGNATURE:
        raise ValueError("written by another version of pool-exporter (layout differs)")
    if not isinstance(meta.get("pool"), str) or not isinstance(meta.get("info"), dict):
        raise ValueError("corrupt header")
    return meta


def write(stats: PoolStats, ints: Values, floats: Values, active: bool = True) -> None:
    """Store every value of `stats` (the rare events' path; the hot ones store their own)."""
    cap = stats.capacity
    ints[HAS_CAPACITY] = 0 if cap is None else 1
    if cap is not None:
        ints[SIZE] = cap.size
        ints[MAX_OVERFLOW] = cap.max_overflow
        floats[TIMEOUT] = cap.timeout
    for field in FIELDS:
        at = OFFSETS[field.name]
        value = getattr(stats, field.name)
        into = floats if field.number == "float" else ints
        if field.kind == "histogram":
            for i, count in enumerate(value.counts):
                ints[at + i] = count
            floats[at + len(value.counts)] = value.sum
        elif field.keys:
            for i, key in enumerate(field.keys):
                into[at + i] = value.get(key, 0)
        else:
            into[at] = value
    ints[ACTIVE] = 1 if active else 0


def views(buffer: Any) -> tuple[Values, Values]:
    """The int64 and the double view of a file's slots, from its whole mapping or content."""
    slots = memoryview(buffer)[HEADER_BYTES:FILE_BYTES]
    return slots.cast("q"), slots.cast("d")


def slots(buffer: Any) -> list[float]:
    """Every slot's value, each read as the type it is stored as."""
    ints, floats = views(buffer)
    out: list[float] = ints.tolist()
    for i in _FLOAT_SLOTS:  # a few: a scrape reads every live file
        out[i] = floats[i]
    return out


_FLOAT_SLOTS = tuple(sorted(FLOATS))


def values(stats: PoolStats) -> list[float]:
    """`stats` as the slots of a file would hold it."""
    out: list[float] = [0] * SLOTS
    write(stats, out, out)
    return out


def read(values: Sequence[float]) -> tuple[PoolStats, bool]:
    """The PoolStats a file's slots (`slots()`) describe, and whether its pool is still
    instrumented."""
    stats = PoolStats()
    if values[HAS_CAPACITY]:
        stats.capacity = Capacity(int(values[SIZE]), int(values[MAX_OVERFLOW]), values[TIMEOUT])
    for field in FIELDS:
        at = OFFSETS[field.name]
        if field.kind == "histogram":
            hist: Histogram = getattr(stats, field.name)
            n = len(hist.counts)
            hist.counts = [int(v) for v in values[at : at + n]]  # ints already; for mypy
            hist.sum = values[at + n]
        elif field.keys:
            setattr(stats, field.name, {k: values[at + i] for i, k in enumerate(field.keys)})
        else:
            setattr(stats, field.name, values[at])
    return stats, bool(values[ACTIVE])


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
    whose buckets changed since is left at 0 rather than mixing two bucket sets."""
    stats = PoolStats()
    for field in FIELDS:
        value = data.get(field.name)
        if value is None:
            continue
        if field.kind == "histogram":
            hist: Histogram = getattr(stats, field.name)
            if value.get("bounds") == list(hist.bounds):
                hist.counts = [int(c) for c in value["counts"]]
                hist.sum = float(value["sum"])
        elif field.kind == "counter" and field.keys:
            setattr(stats, field.name, {k: int(value.get(str(k), 0)) for k in field.keys})
        elif field.kind == "counter":
            setattr(stats, field.name, int(value))
    return stats
