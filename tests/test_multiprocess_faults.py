"""Multiprocess mode when the host misbehaves: a full filesystem, a truncated file, a lock
nobody can open, links and FIFOs planted at the names the code opens, files of another layout
version. Real instrumented workers, real readers and sidecars; each test checks the totals:
nothing lost, nothing counted twice, the application alive, every scrape answered."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pool_exporter.multiprocess import archive, filenames, layout, liveness, slots
from pool_exporter.multiprocess.reader import WorkersCollector
from pool_exporter.multiprocess.store import MultiprocessPoolStats
from pool_exporter.stats import Capacity

from .support.procs import Procs, Samples, parse, pids, procs, start_sidecar, total, wait_until
from .support.workers import kill9, scrape_within, stats_files

__all__ = ["procs"]

FIXTURES = Path(__file__).parent / "fixtures" / "multiprocess"
CHECKOUTS = "sqlalchemy_pool_checkouts_total"
BAD = "pool_exporter_multiprocess_bad_files"
PAGE = 4096


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A memory filesystem of `size` at `path`, as /dev/shm or a sized emptyDir is (root can
    mount one; CI runs the tests as root)."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                   check=True)  # fmt: skip
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def fill(directory: Path) -> list[Path]:
    """Fill the filesystem with one-page files, which can then be removed page by page."""
    made: list[Path] = []
    while True:
        path = directory / f"filler{len(made)}"
        try:
            path.write_bytes(b"x" * PAGE)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
            path.unlink(missing_ok=True)
            return made
        made.append(path)


def token_of(directory: Path, pid: int) -> str:
    return stats_files(directory, pid)[0].split("_")[3]


def as_worker(fixture: str, directory: Path, pid: int, seq: int) -> None:
    """A committed fixture file placed as if the live worker `pid` had written it."""
    data = (FIXTURES / fixture).read_bytes()
    length = int.from_bytes(data[8:16], "little")
    meta = json.loads(data[16 : 16 + length])
    meta.update(pid=pid, token=token_of(directory, pid))
    body = json.dumps(meta).encode()
    page = (data[:8] + len(body).to_bytes(8, "little") + body).ljust(layout.HEADER_BYTES, b"\0")
    name = filenames.stats_file(pid, meta["token"], seq)
    (directory / name).write_bytes(page + data[layout.HEADER_BYTES :])


def test_files_of_the_previous_and_the_next_layout_are_read_and_folded_at_exit(
    tmp_path: Path, procs: Procs
) -> None:
    # layout-1: written by the last release; layout-3: as a next version might write it (an
    # unknown field, one missing, other order). Both are read by name.
    _, found = procs.writer(tmp_path, "--checkouts", "2")
    worker = found["parent"]
    as_worker("layout-1.stats", tmp_path, worker, 100)
    as_worker("layout-3.stats", tmp_path, worker, 101)
    collector = WorkersCollector(str(tmp_path))
    samples = scrape_within(collector)
    assert total(samples, BAD) == 0
    assert total(samples, CHECKOUTS, pool="orders") == 3 + 7
    assert total(samples, CHECKOUTS, pool="pool0") == 2
    assert total(samples, "sqlalchemy_pool_connects_total", pool="orders") == 2 + 2
    assert total(samples, "sqlalchemy_pool_checkout_timeouts_total", pool="orders") == 1
    assert total(samples, "sqlalchemy_pool_gc_returned_connections_total", pool="orders") == 1
    assert total(samples, "pool_exporter_hook_errors_total", pool="orders") == 1
    assert total(samples, "sqlalchemy_pool_checkout_wait_seconds_count", pool="orders") == 3 + 7
    in_use = [v for n, lab, v in samples if n == "sqlalchemy_pool_connections"
              and lab["pool"] == "orders" and lab["state"] == "in_use"]  # fmt: skip
    assert sorted(in_use) == [1, 2]
    assert pids(samples) == {worker}
    # The in-memory SQLite pool has no capacity; the two fixtures' queue pools do.
    assert sorted(v for n, _, v in samples if n == "sqlalchemy_pool_size") == [4, 5]
    # Neither fixture's layout stores pool_recycle: not set, rather than set to 0.
    assert [s for s in samples if s[0] == "sqlalchemy_pool_recycle_seconds"] == []
    kill9(worker)
    for reader in (collector, WorkersCollector(str(tmp_path))):
        samples = scrape_within(reader)
        assert total(samples, CHECKOUTS, pool="orders") == 10
        assert total(samples, CHECKOUTS, pool="pool0") == 2
        assert total(samples, "sqlalchemy_pool_checkout_wait_seconds_count", pool="orders") == 10
        assert pids(samples) == set()
        assert total(samples, BAD) == 0
    assert stats_files(tmp_path) == []


@pytest.mark.root
@pytest.mark.parametrize("free_pages", [0, 3])
def test_a_full_filesystem_keeps_the_worker_alive_and_its_counts_for_later(
    tmp_path: Path, procs: Procs, free_pages: int
) -> None:
    # Three free pages: the lock file and the slot file take one each (their tokens), the
    # header page fits, the slots do not: the page a first store would have faulted on
    # (SIGBUS) without the reservation.
    with tmpfs(tmp_path / "shm", "1m") as directory:
        fillers = fill(directory)
        for path in fillers[:free_pages]:
            path.unlink()
        writer, found = procs.writer(directory, "--checkouts", "5")
        collector = WorkersCollector(str(directory))
        samples = scrape_within(collector)
        assert writer.poll() is None, "the application died"
        assert total(samples, "pool_exporter_multiprocess_up") == 1
        assert total(samples, CHECKOUTS) == 0  # served as missing, never wrong
        for path in fillers[free_pages:]:
            path.unlink()

        # Published once space is back, with everything counted meanwhile.
        def published() -> Samples | None:
            samples = scrape_within(collector)
            return samples if total(samples, CHECKOUTS) else None

        samples = wait_until(published, timeout=15, what="the worker's counts to be published")
        assert total(samples, CHECKOUTS) == 5
        assert total(samples, "pool_exporter_hook_errors_total", hook="store") == 1
        assert pids(samples) == {found["parent"]}
        assert writer.poll() is None
        kill9(found["parent"])


@pytest.mark.root
def test_a_disk_full_during_a_fold_loses_nothing_and_folds_when_space_is_back(
    tmp_path: Path, procs: Procs
) -> None:
    with tmpfs(tmp_path / "shm", "2m") as directory:
        _, live = procs.writer(directory, "--pools", "10", "--checkouts", "2")
        for checkouts in (3, 4, 5):
            _, dead = procs.writer(directory, "--pools", "10", "--checkouts", str(checkouts))
            kill9(dead["parent"])
        # Their lock files go first (pages freed before the fold), then the disk fills up but
        # for one page: the archive (ten pools) begins to be written and cannot be finished.
        assert len(liveness.reap(str(directory)).dead) == 3
        fillers = fill(directory)
        fillers.pop().unlink()
        collector = WorkersCollector(str(directory))
        for _ in range(2):
            samples = scrape_within(collector)
            assert total(samples, "pool_exporter_multiprocess_up") == 1
            assert total(samples, CHECKOUTS) == 140
            assert len(stats_files(directory)) == 40  # not folded: the archive did not fit
        assert not (directory / archive.NAME).exists()
        assert not [n for n in os.listdir(directory) if n.endswith(".tmp")]
        for path in fillers:
            path.unlink()
        for reader in (
            collector,
            WorkersCollector(str(directory)),
            WorkersCollector(str(directory)),
        ):
            samples = scrape_within(reader)
            assert total(samples, CHECKOUTS) == 140
            assert total(samples, CHECKOUTS, pool="pool9") == 14
            assert pids(samples) == {live["parent"]}
        assert stats_files(directory) == stats_files(directory, live["parent"])
        kill9(live["parent"])


def test_a_file_truncated_after_the_sidecar_opened_it_is_skipped_not_a_crash(
    tmp_path: Path, procs: Procs
) -> None:
    _, keep = procs.writer(tmp_path, "--checkouts", "2")
    _, cut = procs.writer(tmp_path, "--checkouts", "3")
    sidecar = start_sidecar(procs, tmp_path)
    assert total(sidecar.scrape(), CHECKOUTS) == 5
    (name,) = stats_files(tmp_path, cut["parent"])
    os.truncate(tmp_path / name, 100)  # the worker stores nothing more: it waits on stdin
    for _ in range(2):
        samples = sidecar.scrape()
        assert total(samples, CHECKOUTS) == 2
        assert total(samples, BAD, reason="format") == 1
        assert pids(samples) == {keep["parent"]}
    assert sidecar.proc.popen.poll() is None
    kill9(cut["parent"])
    kill9(keep["parent"])


def scrape_without_dac_override(directory: Path) -> Samples:
    """One scrape by a reader running as root without CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH, so the mode bits of the files apply to it."""
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE"
    code = (
        "import sys\nfrom prometheus_client import CollectorRegistry, generate_latest\n"
        "from pool_exporter.multiprocess.reader import WorkersCollector\n"
        "r = CollectorRegistry(); r.register(WorkersCollector(sys.argv[1]))\n"
        "sys.stdout.write(generate_latest(r).decode())\n"
    )
    drop = "--bounding-set=-dac_override,-dac_read_search"
    prefix = [setpriv, drop] if os.geteuid() == 0 else []
    result = subprocess.run(
        [*prefix, sys.executable, "-c", code, str(directory)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    return parse(result.stdout)


def test_a_lock_the_reader_cannot_open_is_unknown_and_never_folded(
    tmp_path: Path, procs: Procs
) -> None:
    _, found = procs.writer(tmp_path, "--checkouts", "3")
    worker = found["parent"]
    lock = tmp_path / f"pool_exporter_{worker}.lock"
    lock.chmod(0)
    mine = stats_files(tmp_path, worker)
    for _ in range(2):
        samples = scrape_without_dac_override(tmp_path)
        assert total(samples, CHECKOUTS) == 3  # its counts are served
        assert pids(samples) == set()  # its gauges are not: it may have exited
        assert total(samples, BAD, reason="unreadable") == 1
        assert stats_files(tmp_path, worker) == mine
    kill9(worker)  # now dead, but nobody can tell yet
    samples = scrape_without_dac_override(tmp_path)
    assert total(samples, CHECKOUTS) == 3
    assert stats_files(tmp_path, worker) == mine
    lock.chmod(0o644)
    for reader in (WorkersCollector(str(tmp_path)), WorkersCollector(str(tmp_path))):
        samples = scrape_within(reader)
        assert total(samples, CHECKOUTS) == 3
        assert total(samples, BAD) == 0
    assert stats_files(tmp_path) == []


def test_a_file_of_unknown_liveness_stays_parsed_and_open_between_scrapes(
    tmp_path: Path, procs: Procs
) -> None:
    # The worker still holds its lock, but a link now stands at the lock's name: the reader
    # cannot tell whether it lives, so it serves its counts (not its gauges) from its file.
    _, found = procs.writer(tmp_path, "--checkouts", "3")
    worker = found["parent"]
    lock = tmp_path / f"pool_exporter_{worker}.lock"
    lock.rename(tmp_path / "held")
    lock.symlink_to(tmp_path / "held")
    (name,) = stats_files(tmp_path, worker)
    collector = WorkersCollector(str(tmp_path))
    samples = scrape_within(collector)
    assert total(samples, CHECKOUTS) == 3 and pids(samples) == set()
    kept = collector._known[name]
    assert kept.fd is not None
    for _ in range(3):
        samples = scrape_within(collector)
        assert total(samples, CHECKOUTS) == 3 and pids(samples) == set()
        # Neither parsed nor opened again (a new parse is a new object, with a new fd).
        assert collector._known[name] is kept and collector._kept == 1


@pytest.fixture
def target(tmp_path: Path) -> Path:
    """The file a planted link points to: it must never be written."""
    path = tmp_path / "target"
    path.write_bytes(b"keep")
    return path


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_a_link_or_fifo_at_the_workers_lock_name_is_never_followed_nor_waited_on(
    tmp_path: Path, procs: Procs, kind: str, target: Path
) -> None:
    _, other = procs.writer(tmp_path, "--checkouts", "2")
    writer, planted = procs.writer(tmp_path, "--plant", kind, "--checkouts", "3")
    assert writer.poll() is None
    samples = scrape_within(WorkersCollector(str(tmp_path)))
    assert total(samples, CHECKOUTS) == 2  # the planted worker's: missing, not wrong
    assert pids(samples) == {other["parent"]}
    assert target.read_bytes() == b"keep"
    assert stats_files(tmp_path, planted["parent"]) == []


@pytest.mark.parametrize("kind", ["symlink", "fifo"])
def test_links_and_fifos_at_the_archives_names_neither_block_nor_lose(
    tmp_path: Path, procs: Procs, kind: str, target: Path
) -> None:
    _, live = procs.writer(tmp_path, "--checkouts", "2")
    _, dead = procs.writer(tmp_path, "--checkouts", "3")
    kill9(dead["parent"])
    for name in (archive.LOCK, archive.NAME, f"{archive.NAME}.{os.getpid()}.new"):
        if kind == "fifo":
            os.mkfifo(tmp_path / name)
        else:
            (tmp_path / name).symlink_to(target)
    collector = WorkersCollector(str(tmp_path))
    for reader in (collector, collector, WorkersCollector(str(tmp_path))):
        samples = scrape_within(reader, seconds=10)
        assert total(samples, CHECKOUTS) == 5
        assert pids(samples) == {live["parent"]}
    assert target.read_bytes() == b"keep"
    assert stats_files(tmp_path) == stats_files(tmp_path, live["parent"])
    for name in (archive.LOCK, archive.NAME):
        assert stat.S_ISREG((tmp_path / name).lstat().st_mode)


def test_stale_temporary_files_are_removed_and_a_live_writers_kept(
    tmp_path: Path, procs: Procs
) -> None:
    _, live = procs.writer(tmp_path, "--checkouts", "1")
    token = token_of(tmp_path, live["parent"])
    dead_token = "0123456789abcdef"
    stale = [
        f"pool_exporter_4999999_{dead_token}_00112233445566ff.tmp",
        f"pool_exporter_4999999_{dead_token}_0.stats.new",
        "pool_exporter_archive.00112233445566ff.tmp",
        "pool_exporter_archive.json.77.new",
    ]
    kept = f"pool_exporter_{live['parent']}_{token}_00112233445566ff.tmp"
    for name in (*stale, kept):
        (tmp_path / name).write_bytes(b"half")
    scrape_within(WorkersCollector(str(tmp_path)))
    names = set(os.listdir(tmp_path))
    assert kept in names
    assert not names & set(stale)


def test_a_forked_child_without_a_handle_does_not_keep_its_parents_lock(
    tmp_path: Path, procs: Procs
) -> None:
    _, found = procs.writer(tmp_path, "--uninstrument-and-fork", "--checkouts", "3")
    kill9(found["parent"])  # the child lives on, and instruments nothing
    samples = scrape_within(WorkersCollector(str(tmp_path)))
    assert total(samples, CHECKOUTS) == 3
    assert total(samples, "pool_exporter_multiprocess_dead_workers_total") == 1
    assert total(samples, "pool_exporter_multiprocess_live_workers") == 0
    assert stats_files(tmp_path) == []


def test_files_are_readable_by_a_reader_of_another_user_whatever_the_umask(
    tmp_path: Path, procs: Procs
) -> None:
    old = os.umask(0o077)
    try:
        _, found = procs.writer(tmp_path, "--checkouts", "1")
        _, dead = procs.writer(tmp_path, "--checkouts", "1")
        kill9(dead["parent"])
        scrape_within(WorkersCollector(str(tmp_path)))  # folds: writes the archive
    finally:
        os.umask(old)
    names = [
        *stats_files(tmp_path, found["parent"]),
        f"pool_exporter_{found['parent']}.lock",
        os.path.basename(slots.path(str(tmp_path), 0)),
        archive.NAME,
        archive.LOCK,
    ]
    for name in names:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


# Another process watching a stats file as a reader would, as fast as it can: how often one
# of the int64 `slots` (byte offsets) went back, or every capacity the reader's read saw.
WATCH = """
import json, mmap, os, struct, sys, time
from pool_exporter.multiprocess import filereader
path, mode, seconds, slots = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]
fd = os.open(path, os.O_RDONLY)
m = mmap.mmap(fd, 0, prot=mmap.PROT_READ)
print("ready", flush=True)
last, back, seen, reads = [0] * len(slots), 0, set(), 0
end = time.monotonic() + seconds
while time.monotonic() < end:
    for _ in range(200):
        if mode == "capacity":
            cap = filereader.capacity(filereader.read(fd))
            seen.add(None if cap is None else (cap.size, cap.max_overflow, cap.timeout))
            continue
        now = [struct.unpack_from("<q", m, int(at))[0] for at in slots]
        back += sum(a < b for a, b in zip(now, last))
        last = now
    reads += 200
print(json.dumps({"back": back, "reads": reads, "seen": sorted(seen, key=str)}))
"""


def watched(path: str, mode: str, slots: list[str], work: list[Callable[[], None]]) -> Any:
    """What WATCH saw of `slots` during 4 s of `work`, each function run in a loop by a thread
    of this process, threads switching as often as they can."""
    watcher = subprocess.Popen(
        [sys.executable, "-c", WATCH, path, mode, "4", *slots], stdout=subprocess.PIPE, text=True
    )
    assert watcher.stdout is not None
    assert watcher.stdout.readline() == "ready\n"
    done = threading.Event()

    def loop(step: Callable[[], None]) -> None:
        while not done.is_set():
            step()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    threads = [threading.Thread(target=loop, args=(step,)) for step in work]
    try:
        for t in threads:
            t.start()
        return json.loads(watcher.communicate(timeout=60)[0])
    finally:
        done.set()
        for t in threads:
            t.join()
        sys.setswitchinterval(interval)


def test_a_full_store_racing_the_hot_path_never_writes_back_an_older_value(
    tmp_path: Path,
) -> None:
    # Threads check out and store every value at once (a rare update) as fast as they can.
    stats = MultiprocessPoolStats("p", {}, str(tmp_path))
    assert stats.path is not None

    def hot() -> None:
        stats.enter()
        stats.checked_out(0.001, True, False)
        stats.checked_in(0.001, True)

    def rare() -> None:
        stats.connected(0.01)  # stores every value

    # The counts the hot path changes: each only ever goes up.
    counts = [
        str(layout.HEADER_BYTES + 8 * layout.OFFSETS[n]) for n in ("checkouts", "wait", "hold")
    ]
    seen = watched(stats.path, "back", counts, [hot, hot, rare, rare])
    assert stats.checkouts > 1000 and seen["reads"] > 10_000
    assert seen["back"] == 0, f"a stored count went back {seen['back']} times"


def test_a_scrape_never_sees_half_of_a_new_capacity(tmp_path: Path) -> None:
    # The reader's own read, in another process, while a thread switches the capacity.
    stats = MultiprocessPoolStats("p", {}, str(tmp_path))
    assert stats.path is not None
    either = (Capacity(5, 10, 30.0), Capacity(1, 2, 3.0))

    def reconfigure() -> None:
        for capacity in either:
            stats.configure(capacity)

    def hot() -> None:
        stats.enter()
        stats.checked_out(0.001, True, False)

    seen = watched(stats.path, "capacity", [], [reconfigure, hot])
    assert seen["reads"] > 1000
    whole = {(c.size, c.max_overflow, c.timeout) for c in either}
    assert {tuple(s) for s in seen["seen"] if s is not None} == whole
