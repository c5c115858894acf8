"""A stats file read as every reader reads it (filereader.read): the values its writer holds,
whatever layout wrote it, by name."""

from __future__ import annotations

import os
from pathlib import Path

from pool_exporter.multiprocess import filereader, header, layout
from pool_exporter.multiprocess.store import MultiprocessPoolStats
from pool_exporter.stats import Capacity

from .support.workers import same_fields

FIXTURES = Path(__file__).parent / "fixtures" / "multiprocess"


def read(path: str) -> list[float]:
    fd = os.open(path, os.O_RDONLY)
    try:
        _, shape = header.parse(os.pread(fd, layout.HEADER_BYTES, 0))
        return filereader.read(fd, filereader.decoder(shape))
    finally:
        os.close(fd)


def test_a_stats_file_read_back_holds_every_value_its_writer_holds(tmp_path: Path) -> None:
    stats = MultiprocessPoolStats("p", {}, str(tmp_path))
    assert stats.path is not None
    stats.configure(Capacity(5, 10, 30.0))
    for wait in (0.001, 0.2, 3.0):
        stats.enter()
        stats.checked_out(wait, True, False)
    stats.checked_in(0.5, True)
    stats.invalidated(True)
    stats.hook_failed("checkin")
    slots = read(stats.path)
    assert filereader.capacity(slots) == stats.capacity == Capacity(5, 10, 30.0)
    assert bool(slots[layout.ACTIVE]) is stats.active is True
    assert slots[layout.OFFSETS["in_use"]] == stats.in_use == 2
    back = filereader.to_stats(slots)
    same_fields(back, stats)
    assert back.capacity == stats.capacity


def test_a_file_of_the_next_layout_is_read_by_name() -> None:
    # layout-3.stats: an unknown field, one missing, its fields in another order, an unknown
    # hook key (make_layout_3.py beside it).
    stats = filereader.to_stats(read(str(FIXTURES / "layout-3.stats")))
    assert stats.capacity == Capacity(4, 2, 10.0)
    assert (stats.in_use, stats.checkouts, stats.connects, stats.long_checkouts) == (1, 7, 2, 1)
    assert stats.wait.counts[0] == 7 and stats.wait.sum == 0.0035
    assert stats.gc_returned == 0  # the file lacks it
    assert sum(stats.hook_errors.values()) == 0  # its only hook error is one not known here


def test_a_file_of_layout_1_is_read_with_its_released_slot_map() -> None:
    slots = read(str(FIXTURES / "layout-1.stats"))
    stats = filereader.to_stats(slots)
    assert bool(slots[layout.ACTIVE]) is True
    assert stats.capacity == Capacity(5, 10, 30.0)  # its "has a capacity" flag was set
    assert (stats.in_use, stats.checkouts, stats.connects, stats.timeouts) == (2, 3, 2, 1)
    assert (stats.gc_returned, stats.long_checkouts, stats.hook_errors["checkin"]) == (1, 1, 1)
    assert stats.wait.counts[:8] == [1, 0, 1, 0, 0, 0, 0, 1] and sum(stats.wait.counts) == 3
