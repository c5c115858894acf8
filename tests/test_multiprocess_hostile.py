"""Files in the multiprocess directory that are not what their names say: each is skipped,
counted by reason, and never hangs a scrape nor blanks the other workers' series."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from pool_exporter import metrics
from pool_exporter.multiprocess import archive, header, layout
from pool_exporter.multiprocess.reader import WorkersCollector

from .support.procs import Procs, Samples, pids, procs, start_sidecar, total, wait_until
from .support.workers import kill9, scrape_within, stats_files

__all__ = ["procs"]

STRANGER = 4_999_999  # above the largest pid_max (2**22): never a real process
TOKEN = "0123456789abcdef"


def app_file(path: Path, name: str = "app_requests", value: float = 1.0) -> None:
    """A prometheus-client counter file, as an application's worker writes it."""
    d = MmapedDict(str(path))
    d.write_value(mmap_key(name, name + "_total", [], [], "Requests."), value, 0)
    d.close()


def a_stats_file(directory: Path) -> Path:
    return directory / stats_files(directory)[0]


def truncated_stats(d: Path) -> None:
    data = a_stats_file(d).read_bytes()[:100]
    (d / f"pool_exporter_{STRANGER}_{TOKEN}_0.stats").write_bytes(data)


def hostile_header(d: Path, meta: object, body: bytes | None = None) -> None:
    """A stats file of a stranger whose header holds `meta` (or the raw `body`)."""
    body = json.dumps(meta).encode() if body is None else body
    page = (header.MAGIC + len(body).to_bytes(8, "little") + body).ljust(layout.HEADER_BYTES, b"\0")
    (d / f"pool_exporter_{STRANGER}_{TOKEN}_2.stats").write_bytes(page + bytes(8 * layout.SLOTS))


def a_header(**changes: object) -> dict[str, object]:
    meta = json.loads(header.encode("p", {}, STRANGER, TOKEN)[16:].rstrip(b"\0"))
    return {**meta, **changes}


def layout_1_header(**changes: object) -> dict[str, object]:
    """A header in the form layout 1 wrote: a signature instead of a slot map."""
    return {k: v for k, v in a_header(**changes).items() if k not in ("fields", "slots")}


def archive_with_a_count_past_its_buckets(d: Path) -> None:
    wait = {"bounds": list(metrics.WAIT_BUCKETS), "sum": 1.0}
    wait["counts"] = [1] * (len(metrics.WAIT_BUCKETS) + 2)
    body = {"pools": {"pool0": {"checkouts": 1, "wait": wait}}, "folded": []}
    (d / archive.NAME).write_text(json.dumps(body))


def truncated_db(d: Path) -> None:
    app_file(d / "counter_8.db")
    with open(d / "counter_8.db", "r+b") as f:
        f.truncate(20)


def misnamed_db(d: Path) -> None:
    app_file(d / "x_1.db")


def garbage_db(d: Path) -> None:
    (d / "counter_10.db").write_bytes((16).to_bytes(4, "little") + b"\0" * 4 + b"\xff" * 8)


CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "fifo db": (lambda d: os.mkfifo(d / "counter_115.db"), "not_regular"),
    "fifo lock": (lambda d: os.mkfifo(d / "pool_exporter_4242.lock"), "not_regular"),
    "fifo stats": (lambda d: os.mkfifo(d / f"pool_exporter_4242_{TOKEN}_0.stats"), "not_regular"),
    "truncated stats": (truncated_stats, "format"),
    "truncated db": (truncated_db, "format"),
    "empty db": (lambda d: (d / "counter_7.db").write_bytes(b""), "format"),
    "garbage db": (garbage_db, "format"),
    "misnamed db": (misnamed_db, "format"),
    "deeply nested header": (
        lambda d: hostile_header(d, None, b"[" * 3000 + b"]" * 3000),
        "format",
    ),
    "pid not an integer": (lambda d: hostile_header(d, a_header(pid="12a")), "format"),
    "pid a float": (lambda d: hostile_header(d, a_header(pid=12.0)), "format"),
    "info not text": (lambda d: hostile_header(d, a_header(info={"a": [1]})), "format"),
    "slot outside the file": (
        lambda d: hostile_header(d, a_header(fields={"checkouts": {"at": 10**6}})),
        "format",
    ),
    "bounds not numbers": (
        lambda d: hostile_header(d, a_header(fields={"wait": {"at": 5, "bounds": ["x"]}})),
        "format",
    ),
    "unknown layout": (lambda d: hostile_header(d, layout_1_header(layout="f" * 16)), "format"),
    "directory": (lambda d: (d / "counter_3.db").mkdir(), "not_regular"),
    "symlink db": (lambda d: (d / "counter_9.db").symlink_to("/dev/urandom"), "symlink"),
    "symlink stats": (
        lambda d: (d / f"pool_exporter_{STRANGER}_{TOKEN}_1.stats").symlink_to("/dev/zero"),
        "symlink",
    ),
}


@pytest.fixture
def populated(tmp_path: Path, procs: Procs) -> tuple[Path, int]:
    """A live worker (2 checkouts), an exited one (3), and an application counter file."""
    _, dead = procs.writer(tmp_path, "--checkouts", "3")
    kill9(dead["parent"])
    _, live = procs.writer(tmp_path, "--checkouts", "2")
    app_file(tmp_path / "counter_1.db", value=4)
    return tmp_path, live["parent"]


def assert_intact(samples: Samples, live_pid: int) -> None:
    assert total(samples, "pool_exporter_multiprocess_up") == 1
    assert total(samples, "sqlalchemy_pool_checkouts_total") == 5
    assert total(samples, "sqlalchemy_pool_checkout_wait_seconds_count") == 5
    assert pids(samples) == {live_pid}
    assert total(samples, "app_requests_total") == 4


@pytest.mark.parametrize("case", CASES)
def test_a_bad_file_is_skipped_and_counted(case: str, populated: tuple[Path, int]) -> None:
    directory, live_pid = populated
    make, reason = CASES[case]
    make(directory)
    collector = WorkersCollector(str(directory))
    for _ in range(2):  # and again, once the exited worker is folded
        samples = scrape_within(collector)
        assert_intact(samples, live_pid)
        assert total(samples, "pool_exporter_multiprocess_bad_files", reason=reason) == 1
        assert total(samples, "pool_exporter_multiprocess_bad_files") == 1


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """`path` cannot be removed, even by root: as another user's file in a sticky (1777)
    directory cannot be by the sidecar."""
    subprocess.run(["chattr", "+i", str(path)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_another_users_file_that_cannot_be_removed_is_counted_once(
    populated: tuple[Path, int],
) -> None:
    directory, live_pid = populated
    dead = [p for p in stats_files(directory) if not p.startswith(f"pool_exporter_{live_pid}_")]
    (name,) = dead
    os.chown(directory / name, 65534, 65534)  # nobody's
    with immutable(directory / name):
        collector = WorkersCollector(str(directory))
        for _ in range(3):
            samples = scrape_within(collector)
            assert_intact(samples, live_pid)
            assert (
                total(samples, "pool_exporter_multiprocess_bad_files", reason="cannot_remove") == 1
            )
        # A second reader, starting from the archive alone, agrees.
        assert_intact(scrape_within(WorkersCollector(str(directory))), live_pid)
    scrape_within(collector)
    assert not (directory / name).exists()


def test_sidecar_serves_beside_fifos_and_reports_an_unreadable_directory(
    populated: tuple[Path, int], procs: Procs
) -> None:
    directory, live_pid = populated
    os.mkfifo(directory / "counter_115.db")
    os.mkfifo(directory / "pool_exporter_4242.lock")
    sidecar = start_sidecar(procs, directory)
    for _ in range(3):
        samples = sidecar.scrape()
        assert_intact(samples, live_pid)
        assert total(samples, "pool_exporter_multiprocess_bad_files", reason="not_regular") == 2
    assert sidecar.client.get(sidecar.url + "/-/ready").status_code == 200
    moved = directory.with_name("moved")
    directory.rename(moved)
    try:
        ready = sidecar.client.get(sidecar.url + "/-/ready")
        assert ready.status_code == 503
        assert str(directory) in ready.text
        assert total(sidecar.scrape(), "pool_exporter_multiprocess_up") == 0
    finally:
        moved.rename(directory)
    wait_until(lambda: sidecar.client.get(sidecar.url + "/-/ready").status_code == 200)
    assert_intact(sidecar.scrape(), live_pid)
    assert "Traceback" not in sidecar.proc.output()
