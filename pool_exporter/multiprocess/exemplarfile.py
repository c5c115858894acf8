"""A worker's exemplars of one pool, in a file beside its stats file, for the sidecar.

The file is named after the stats file it goes with (filenames.exemplar_file), so it has the
same writer and the same liveness: a reader pairs the two by name and removes the exemplar
file of an exited worker as it folds the stats file. It is made on the first exemplar, so a
worker that never records one has none.

Its header page is of the stats file's kind (header.encode_page): MAGIC, the length of a JSON
text (8 bytes, little-endian), the text, then zeros up to HEADER_BYTES. The text says where each
histogram's records are, by the names exemplars.BOUNDS uses, with its bounds: a reader of
another version finds the records by name and leaves out a histogram whose buckets differ.
Then one RECORD_BYTES record per bucket: the CRC-32 of the rest of the record, 4 bytes of
padding, the trace id (16 bytes) and the span id (8 bytes) big-endian as W3C trace context
writes them, the value and the Unix time (doubles).

A checksum rather than a sequence counter, because Python cannot order its stores into a
mapping as a sequence lock needs: on a weakly ordered CPU a reader could see a record's bytes
before the counter that says they are being written. A record whose checksum does not match
was read while being written (or is not ours), and is left out of that scrape: missing, not
wrong. Within the writing process each record is one slice assignment, which the GIL keeps
whole against the process's other threads.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import zlib
from time import monotonic
from typing import TYPE_CHECKING, Any

from pool_exporter.exemplars import BOUNDS, Entries, Exemplars, Traced, valid

from . import filenames, files
from .header import decode_page, encode_page

if TYPE_CHECKING:
    from collections.abc import Callable

    from .store import MultiprocessPoolStats

MAGIC = b"PXEXMPL1"
VERSION = 1
HEADER_BYTES = 4096
RECORD_BYTES = 48
_BODY = struct.Struct("<16s8sdd")  # after the checksum and the padding
_MAX_RECORDS = 1024
# The most a file of any version holds: a reader reads no more.
MAX_BYTES = HEADER_BYTES + RECORD_BYTES * _MAX_RECORDS
# A file that could not be made (a full filesystem) is tried again no sooner than this.
_RETRY_SECONDS = 2.0


def _describe() -> dict[str, dict[str, Any]]:
    """This version's records by histogram: its first record and its bounds."""
    out: dict[str, dict[str, Any]] = {}
    at = 0
    for series, bounds in BOUNDS.items():
        out[series] = {"at": at, "bounds": list(bounds)}
        at += len(bounds) + 1  # +Inf's bucket too
    return out


SERIES = _describe()
RECORDS = sum(len(e["bounds"]) + 1 for e in SERIES.values())
FILE_BYTES = HEADER_BYTES + RECORD_BYTES * RECORDS
OFFSETS = {series: entry["at"] for series, entry in SERIES.items()}


def header() -> bytes:
    """This version's header page."""
    found = encode_page(
        MAGIC, {"version": VERSION, "records": RECORDS, "series": SERIES}, HEADER_BYTES
    )
    assert found is not None  # a few hundred bytes
    return found


def encode(traced: Traced) -> bytes:
    """One record."""
    body = _BODY.pack(
        traced.trace_id.to_bytes(16, "big"),
        traced.span_id.to_bytes(8, "big"),
        traced.value,
        traced.timestamp,
    )
    return zlib.crc32(body).to_bytes(4, "little") + bytes(4) + body


def _record(data: bytes, at: int) -> Traced | None:
    """The record at byte `at`, or None: never written, being written, or not ours."""
    body = data[at + 8 : at + RECORD_BYTES]
    if int.from_bytes(data[at : at + 4], "little") != zlib.crc32(body):
        return None
    trace_id, span_id, value, timestamp = _BODY.unpack(body)
    return Traced(int.from_bytes(trace_id, "big"), int.from_bytes(span_id, "big"), value, timestamp)


def _layout(data: bytes) -> tuple[int, dict[str, int]]:
    """From a file's content: how many records it has, and the first record of each histogram
    this version has with the same buckets; ValueError naming the problem when it is not an
    exemplar file's header, whatever the bytes are."""
    meta = decode_page(data, MAGIC, "exemplar file", HEADER_BYTES)
    records, series = meta.get("records"), meta.get("series")
    if not isinstance(records, int) or isinstance(records, bool) or not isinstance(series, dict):
        raise ValueError("corrupt header")
    if not 0 < records <= _MAX_RECORDS:
        raise ValueError("corrupt header")
    found = {}
    for name, bounds in BOUNDS.items():
        theirs = series.get(name)
        if not isinstance(theirs, dict) or theirs.get("bounds") != list(bounds):
            continue  # not there, or other buckets: none rather than misplaced ones
        at = theirs.get("at")
        if (
            not isinstance(at, int)
            or isinstance(at, bool)
            or not 0 <= at <= records - len(bounds) - 1
        ):
            raise ValueError("corrupt header")
        found[name] = at
    return records, found


class View:
    """One exemplar file as a reader keeps it between scrapes: its header, parsed once while it
    stays the same, and its records as last read with the exemplars they held, so a scrape of
    an unchanged file decodes nothing. `fd` is its descriptor while the reader keeps it open;
    then only its records are read again (`records`), as a kept stats file's slots are: a
    writer never replaces its file, and another file under the name is not the writer's."""

    __slots__ = ("_at", "_entries", "_page", "_raw", "_records", "fd", "size")

    def __init__(self) -> None:
        self.fd: int | None = None
        # How much of the records to read: one byte more than the header says they take (a
        # file that is longer is not one).
        self.size = 0
        self._page: int | None = None  # the header's hash (a keyed one: nobody can aim at it)
        self._records = 0
        self._at: dict[str, int] = {}
        self._raw: bytes | None = None  # nothing read yet (no records is not that)
        self._entries: Entries = ()

    def read(self, data: bytes) -> Entries:
        """The exemplars the file's whole content `data` holds, for the histograms this
        version has with the same buckets; ValueError when it is not an exemplar file (or not
        whole). A record that is not an exemplar of its bucket is left out."""
        page = hash(data[:HEADER_BYTES])
        if page != self._page:
            self._records, self._at = _layout(data)
            self._page, self._raw = page, None
            self.size = RECORD_BYTES * self._records + 1
        return self.records(data[HEADER_BYTES:])

    def records(self, raw: bytes) -> Entries:
        """The exemplars in `raw`, the file's records read again (after `read`)."""
        if raw == self._raw:
            return self._entries
        if self._page is None or len(raw) != RECORD_BYTES * self._records:
            raise ValueError("truncated")
        found = []
        for name, at in self._at.items():
            bounds = BOUNDS[name]
            for bucket in range(len(bounds) + 1):
                start = RECORD_BYTES * (at + bucket)
                if raw[start : start + RECORD_BYTES] == _EMPTY:
                    continue  # never written
                traced = _record(raw, start)
                if traced is not None and valid(traced, bounds, bucket):
                    found.append((name, bucket, traced))
        self._raw, self._entries = raw, tuple(found)
        return self._entries


_EMPTY = bytes(RECORD_BYTES)


def decode(data: bytes) -> Entries:
    """The exemplars a file's content `data` holds (View.read, once)."""
    return View().read(data)


def create(stats_path: str) -> mmap.mmap:
    """The exemplar file of the stats file `stats_path` (of this process), made empty and
    mapped; OSError or ValueError when it cannot be."""
    directory, name = os.path.split(stats_path)
    match = filenames.STATS_FILE.match(name)
    if match is None:
        raise ValueError(f"{name} is not a stats file's name")
    pid, token = int(match.group(1)), match.group(2)
    # Not an exemplar file's name until it is complete; a reader removes it if this process
    # exits before (filenames.UNFINISHED_STATS_FILE).
    path = os.path.join(directory, filenames.exemplar_file(name))
    return files.create_mapped(path, filenames.unfinished_prefix(pid, token), FILE_BYTES, header())


class FileExemplars(Exemplars):
    """A pool's exemplars, each also stored into this worker's exemplar file of the pool.

    The file goes with the stats file the pool's stats write now (`stats.path`): none while
    there is none, and a new one when that changes (a forked child's). It is made by the
    first exemplar, on the application's thread, once; one that cannot be made is counted
    under `hook="store"` and tried again by an exemplar at least _RETRY_SECONDS later. Two
    threads never make it twice: the second finds the first at it and keeps its exemplar in
    process (the file gets every exemplar once it exists).
    """

    def __init__(
        self,
        pool: str,
        hook_failed: Callable[[str, BaseException], None],
        stats: MultiprocessPoolStats,
    ) -> None:
        super().__init__(pool, hook_failed)
        self.stats = stats
        self._map: mmap.mmap | None = None
        self._for: str | None = None  # the stats file the mapping goes with
        self._making = threading.Lock()
        self._retry_at = 0.0

    def stored(self, series: str, bucket: int, traced: Traced) -> None:
        path = self.stats.path
        if path is None:  # no stats file: the sidecar would not read an exemplar file either
            return
        mapped = self._map if self._for == path else self._open(path)
        if mapped is not None:
            at = HEADER_BYTES + RECORD_BYTES * (OFFSETS[series] + bucket)
            mapped[at : at + RECORD_BYTES] = encode(traced)

    def _open(self, stats_path: str) -> mmap.mmap | None:
        if monotonic() < self._retry_at or not self._making.acquire(blocking=False):
            return None
        try:
            try:
                mapped = create(stats_path)
            except (OSError, ValueError) as exc:
                self._retry_at = monotonic() + _RETRY_SECONDS
                self.hook_failed("store", exc)
                return None
            # What this process recorded before the file existed goes in first.
            for series, slots in self.latest.items():
                for bucket, traced in enumerate(slots):
                    if traced is not None:
                        at = HEADER_BYTES + RECORD_BYTES * (OFFSETS[series] + bucket)
                        mapped[at : at + RECORD_BYTES] = encode(traced)
            self._map, self._for = mapped, stats_path
            return mapped
        finally:
            self._making.release()

    def forget(self) -> None:
        # A forked child: the parent's file and mapping are the parent's (dropping this
        # process's copy of the mapping leaves the parent's alone).
        super().forget()
        self._map, self._for = None, None
        self._making = threading.Lock()  # a parent's thread may have held it at the fork
        self._retry_at = 0.0
