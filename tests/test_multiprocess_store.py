"""The per-worker stats files and the archive of exited workers: real processes, real files."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pool_exporter.multiprocess import archive, filenames, slots
from pool_exporter.multiprocess.reader import WorkersCollector
from pool_exporter.multiprocess.store import LockedMultiprocessPoolStats, MultiprocessPoolStats
from pool_exporter.stats import TIMEOUT, Capacity, PoolStats

from .support.procs import Procs, pids, procs, total
from .support.workers import file_values, kill9, same_fields, scrape, stats_files

__all__ = ["procs"]


@pytest.mark.parametrize("kind", [MultiprocessPoolStats, LockedMultiprocessPoolStats])
def test_the_file_holds_every_field_after_every_kind_of_update(
    tmp_path: Path, kind: type[MultiprocessPoolStats]
) -> None:
    plain, stored = PoolStats(), kind("p", {"dialect": "x"}, str(tmp_path))
    for s in (plain, stored):
        s.configure(Capacity(5, 10, 30.0))
        for wait in (0.0005, 0.003, 0.2, 31.0):
            s.enter()
            s.checked_out(wait, True, False)
        s.checked_in(0.004, True)
        s.checked_in(None, False)
        s.enter()
        s.checked_out(0.001, True, True)
        s.enter()
        s.failed(TIMEOUT, 0.2)
        s.enter()
        s.failed("connect_error", 0.01)
        s.detached(0.5)
        s.connected(0.02)
        s.closed(True, "overflow")
        s.invalidated(soft=True)
        s.hook_failed("checkin")
        s.held_long()
        s.collected()
        # last: it stores one slot of its own, which a later full store would cover up
        s.oldest_changed(1_700_000_000.5)
    same_fields(file_values(stored), plain)
    assert file_values(stored).checkouts == 5
    assert file_values(stored).capacity == Capacity(5, 10, 30.0)


@pytest.mark.parametrize("kind", [MultiprocessPoolStats, LockedMultiprocessPoolStats])
def test_threads_racing_leave_the_file_at_the_final_values(
    tmp_path: Path, kind: type[MultiprocessPoolStats]
) -> None:
    stats = kind("p", {}, str(tmp_path))

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        for _ in range(5000):
            stats.enter()
            stats.checked_out(rnd.random() / 50, True, False)
            stats.checked_in(rnd.random() / 50, True)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.checkouts == 30000
    same_fields(file_values(stats), stats)


def test_a_forked_child_writes_a_file_of_its_own(tmp_path: Path, procs: Procs) -> None:
    _, found = procs.writer(tmp_path, "--fork", "--checkouts", "2")
    assert len(stats_files(tmp_path, found["parent"])) == 1
    assert len(stats_files(tmp_path, found["child"])) == 1


KILL_AT = {
    # The new archive is written aside but not renamed into place: nothing counted yet.
    "before-rename": "if dst.endswith(archive.NAME): os._exit(9)",
    # Renamed into place, then killed before the second folded file is deleted.
    "after-rename": "deleted.append(dst)\nif len(deleted) == 2: os._exit(9)",
}


def reader_killed(directory: Path, point: str) -> int:
    """A reader process killed at `point` of its fold; its exit status."""
    patch = "rename" if point == "before-rename" else "unlink"
    code = f"""
import os
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from pool_exporter.multiprocess import archive
from pool_exporter.multiprocess.reader import WorkersCollector
real, deleted = os.{patch}, []
def patched(*args):
    dst = args[-1]
    if dst.endswith(".stats") or dst.endswith(archive.NAME):
{"".join("        " + line + chr(10) for line in KILL_AT[point].splitlines())}    return real(*args)
os.{patch} = patched
registry = CollectorRegistry()
registry.register(WorkersCollector({str(directory)!r}))
generate_latest(registry)
"""
    return subprocess.run([sys.executable, "-c", code], check=False, timeout=60).returncode


def test_a_reader_killed_mid_fold_neither_loses_nor_doubles(tmp_path: Path, procs: Procs) -> None:
    for point in KILL_AT:
        directory = tmp_path / point
        directory.mkdir()
        _, live = procs.writer(directory, "--pools", "2", "--checkouts", "2")
        for checkouts in (3, 5):
            _, dead = procs.writer(directory, "--pools", "2", "--checkouts", str(checkouts))
            kill9(dead["parent"])
        assert reader_killed(directory, point) == 9
        names = sorted(os.listdir(directory))
        assert len([n for n in names if n.endswith(".stats")]) == (
            6 if point == "before-rename" else 5
        )
        for _ in range(2):
            samples = scrape(WorkersCollector(str(directory)))
            assert total(samples, "sqlalchemy_pool_checkouts_total", pool="pool0") == 10, point
            assert total(samples, "sqlalchemy_pool_checkout_wait_seconds_count", pool="pool1") == 10
            assert pids(samples) == {live["parent"]}
        # Only the live worker's files and the archive are left.
        assert stats_files(directory) == stats_files(directory, live["parent"])
        assert (directory / archive.NAME).exists()


def test_two_readers_during_churn_count_exactly_and_never_go_back(
    tmp_path: Path, procs: Procs
) -> None:
    readers = [WorkersCollector(str(tmp_path)) for _ in range(2)]
    seen: list[list[float]] = [[], []]
    done = threading.Event()

    def watch(n: int) -> None:
        while not done.is_set():
            seen[n].append(total(scrape(readers[n]), "sqlalchemy_pool_checkouts_total"))

    watchers = [threading.Thread(target=watch, args=(n,)) for n in range(2)]
    for w in watchers:
        w.start()
    expected = 0
    try:
        for n in range(12):
            writer, found = procs.writer(tmp_path, "--checkouts", str(n + 1))
            expected += n + 1
            if n % 2:
                kill9(found["parent"])
            else:
                assert writer.stdin is not None
                writer.stdin.close()
                writer.wait(10)
    finally:
        done.set()
        for w in watchers:
            w.join()
    for values in seen:
        assert values, "no scrape completed"
        assert values == sorted(values), "a total went backwards"
    for reader in readers:
        assert total(scrape(reader), "sqlalchemy_pool_checkouts_total") == expected
    assert stats_files(tmp_path) == []
    # One worker at a time, so one worker slot, taken again by each.
    slot = os.path.basename(slots.path(str(tmp_path), 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([archive.LOCK, archive.NAME, slot])


def test_a_reused_pid_neither_resets_nor_doubles_the_dead_workers_counts(
    tmp_path: Path, procs: Procs
) -> None:
    _, dead = procs.writer(tmp_path, "--checkouts", "3")
    kill9(dead["parent"])
    (old,) = stats_files(tmp_path)
    # The dead worker's pid is given to a new process: it takes the same lock file and
    # writes a file of its own beside the dead one's.
    _, new = procs.writer(tmp_path, "--checkouts", "4", "--reuse-pid-of", old)
    mine = stats_files(tmp_path, new["parent"])
    assert len(mine) == 2 and filenames.STATS_FILE.match(mine[0])
    for _ in range(2):
        samples = scrape(WorkersCollector(str(tmp_path)))
        assert total(samples, "sqlalchemy_pool_checkouts_total") == 7
        assert pids(samples) == {new["parent"]}
    assert len(stats_files(tmp_path)) == 1


WRITE_FORTY_POOLS = """
import sys
from pool_exporter.multiprocess.store import MultiprocessPoolStats
pools = [MultiprocessPoolStats(f"p{n}", {"dialect": "x"}, sys.argv[1]) for n in range(40)]
for n, stats in enumerate(pools):
    for _ in range(n + 1):
        stats.enter()
        stats.checked_out(0.001, True, False)
print("ready", flush=True)
sys.stdin.read()  # a live worker until the test closes its input
"""

READ_WITH_FEW_DESCRIPTORS = """
import resource, sys
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from pool_exporter.multiprocess.reader import WorkersCollector
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (int(sys.argv[2]), hard))
collector = WorkersCollector(sys.argv[1])
registry = CollectorRegistry()
registry.register(collector)
for _ in range(3):  # the first scrape opens and keeps what it may, the next ones reuse them
    text = generate_latest(registry).decode()
print(collector._kept, sum(
    s.value for f in text_string_to_metric_families(text) for s in f.samples
    if s.name == "sqlalchemy_pool_checkouts_total"
))
"""


def test_a_reader_with_fewer_descriptors_than_live_files_reads_every_file(tmp_path: Path) -> None:
    # A live worker with 40 pool files; the reader may keep 10 open (half its limit of 20
    # descriptors) and opens the other 30 for each read.
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITE_FORTY_POOLS, str(tmp_path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "ready\n"
        done = subprocess.run(
            [sys.executable, "-c", READ_WITH_FEW_DESCRIPTORS, str(tmp_path), "20"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        writer.communicate("", timeout=30)
    assert done.returncode == 0, done.stderr
    kept, checkouts = done.stdout.split()
    assert int(kept) == 10
    assert float(checkouts) == sum(range(1, 41))
