"""Storing every value of a PoolStats into a stats file's slots: the rare updates' path.

Each worker writes its own file (one writer, no lock): every value is an aligned 8-byte store
into a shared mapping, which a reader on the same machine can never see half-written. The hot
path's methods store only what they change (store.py); everything else stores every value
with store_all(), generated from the slot map (layout.py) as one straight line of stores.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pool_exporter.stats import FIELDS, PoolStats

from .layout import (
    ACTIVE,
    CAPACITY_VERSION,
    HEADER_BYTES,
    MAX_OVERFLOW,
    OFFSETS,
    SIZE,
    SLOTS,
    TIMEOUT,
)

# Where a file's slots are stored: its mapping as a memoryview of int64 or of doubles (two
# views of the same bytes), or a list before a file exists. typeshed's memoryview is generic
# over a single item type, which does not fit a view cast at runtime.
Values = Any


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
    code = compile(_store_all_source(), "<pool_exporter storeall.store_all>", "exec")
    exec(code, scope)
    return scope["store_all"]  # type: ignore[no-any-return]


store_all: Callable[[PoolStats, Values, Values, bool], None] = _compile_store_all()
store_all.__doc__ = (
    "Store every value of `stats` into `ints` and `floats` (views(), or one list for both)."
)


def views(buffer: Any, slots: int = SLOTS) -> tuple[Values, Values]:
    """The int64 and the double view of a file's `slots` slots (with a route region, more
    than this version's fields), from its whole mapping or content."""
    found = memoryview(buffer)[HEADER_BYTES : HEADER_BYTES + 8 * slots]
    return found.cast("q"), found.cast("d")
