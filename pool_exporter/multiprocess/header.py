"""A stats file's header page: what its values belong to, and where each one is.

The page is MAGIC, the length of a JSON text (8 bytes, little-endian), the text, then zeros up
to layout.HEADER_BYTES (encode_page; an exemplar file's header is one too, with its own magic).
The text names the pool, its info labels, the writer's pid and lock token, its `worker` label
(slots.py), and the slot map (layout.py). A reader trusts none of it: parse() refuses whatever
is not such a header, whatever the bytes are.
"""

from __future__ import annotations

import json
from typing import Any

from . import layout

MAGIC = b"PXSTATS1"
# A header that cannot be one of ours; no reader recurses into it (json would, per level).
_MAX_DEPTH = 8


def encode(
    pool: str,
    info: dict[str, str],
    pid: int,
    token: str,
    worker: str | None = None,
    *,
    shape: layout.Shape = layout.SHAPE,
) -> bytes:
    """The header page of this version's file (`worker`: the slot label, slots.py; a file
    without one is labelled by its pid; `shape`: with a route region, layout.with_routes)."""
    meta: dict[str, Any] = {
        "pool": pool,
        "info": info,
        "pid": pid,
        "token": token,
        "version": layout.VERSION,
        "slots": shape.slots,
        "fields": dict(shape.fields),
    }
    if worker is not None:
        meta["worker"] = worker
    found = encode_page(MAGIC, meta)
    if found is None:
        raise ValueError(f"pool name and info of {pool!r} do not fit in the stats file header")
    return found


def parse(page: bytes) -> tuple[dict[str, Any], layout.Shape]:
    """The header's fields and the file's shape; ValueError naming the problem when it is
    not a header this version can read, whatever the bytes are."""
    meta = decode_page(page, MAGIC, "stats file")
    pool, info, pid, token = (meta.get(k) for k in ("pool", "info", "pid", "token"))
    if not (isinstance(pool, str) and isinstance(info, dict) and isinstance(token, str)):
        raise ValueError("corrupt header")
    if not all(isinstance(v, str) for v in info.values()) or not _positive(pid):
        raise ValueError("corrupt header")
    return meta, layout.shape_of(meta)


def encode_page(
    magic: bytes, meta: dict[str, Any], size: int = layout.HEADER_BYTES
) -> bytes | None:
    """A header page of `size` bytes: `magic` (8 bytes), the length of `meta` as JSON (8
    bytes, little-endian), that JSON, zeros; None when it does not fit. The stats file's and
    the exemplar file's (exemplarfile.py) headers are such pages."""
    body = json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()
    found = magic + len(body).to_bytes(8, "little") + body
    return found.ljust(size, b"\0") if len(found) <= size else None


def decode_page(
    data: bytes, magic: bytes, what: str, size: int = layout.HEADER_BYTES
) -> dict[str, Any]:
    """The JSON object of a header page that `data` starts with (encode_page's, `size` bytes,
    with `magic`); ValueError naming the problem when it is not one of a `what`, whatever
    the bytes are."""
    if len(data) < size or data[:8] != magic:
        raise ValueError(f"not a pool-exporter {what}")
    length = int.from_bytes(data[8:16], "little")
    if not 0 < length <= size - 16:
        raise ValueError("corrupt header")
    body = data[16 : 16 + length]
    if _depth(body) > _MAX_DEPTH:
        raise ValueError("corrupt header (nested too deep)")
    try:
        meta = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ValueError("corrupt header") from None
    if not isinstance(meta, dict):
        raise ValueError("corrupt header")
    return meta


def _positive(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


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
