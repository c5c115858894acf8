"""The `worker` label: the lowest free slot, held for a worker's life and then handed on; a
worker whose slot files are missing, planted or cannot be made still counts."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pool_exporter.multiprocess import header, layout, slots

from .support.privileges import without_dac_override
from .support.procs import INFO, Procs, Samples, procs, select, total
from .support.workers import kill9, merged, stats_files

__all__ = ["procs"]


def labels_by_pid(samples: Samples) -> dict[int, str]:
    """Each live worker's label, by pid, from the info metric (which carries both)."""
    found: dict[int, str] = {}
    for _, labels, _ in select(samples, INFO):
        assert found.setdefault(int(labels["pid"]), labels["worker"]) == labels["worker"]
    return found


def per_worker_label_sets(samples: Samples) -> set[tuple[str, str]]:
    return {
        (s[1]["pool"], s[1]["worker"]) for s in select(samples, "sqlalchemy_pool_waiting_checkouts")
    }


def test_workers_alive_at_once_hold_the_lowest_slots_and_a_new_one_takes_a_freed_slot(
    tmp_path: Path, procs: Procs
) -> None:
    _, first = procs.writer(tmp_path, "--fork", "--pools", "2")
    assert labels_by_pid(merged(tmp_path)) == {first["parent"]: "0", first["child"]: "1"}
    kill9(first["child"])
    _, second = procs.writer(tmp_path, "--pools", "2")
    samples = merged(tmp_path)
    assert labels_by_pid(samples) == {first["parent"]: "0", second["parent"]: "1"}
    # Two pools of two workers: four label sets, as before the child was replaced.
    assert per_worker_label_sets(samples) == {(p, w) for p in ("pool0", "pool1") for w in "01"}
    assert total(samples, "sqlalchemy_pool_checkouts_total") == 6


def test_a_planted_link_or_fifo_in_a_slots_place_is_passed_over(
    tmp_path: Path, procs: Procs
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-target"
    outside.write_text("not ours\n")
    os.symlink(outside, slots.path(str(tmp_path), 0))
    os.mkfifo(slots.path(str(tmp_path), 1))  # an open that blocked here would hang the worker
    _, found = procs.writer(tmp_path)
    assert labels_by_pid(merged(tmp_path)) == {found["parent"]: "2"}
    assert outside.read_text() == "not ours\n"
    assert Path(slots.path(str(tmp_path), 0)).is_symlink()


def test_a_worker_that_cannot_claim_a_slot_counts_under_its_pid(
    tmp_path: Path, procs: Procs
) -> None:
    # Every slot name taken by something that is not a lock file: the worker gives up on
    # slots (and stops trying after a few), not on its metrics.
    for n in range(64):
        os.mkdir(slots.path(str(tmp_path), n))
    _, found = procs.writer(tmp_path, "--checkouts", "3")
    samples = merged(tmp_path)
    assert labels_by_pid(samples) == {found["parent"]: slots.fallback(found["parent"])}
    assert total(samples, "sqlalchemy_pool_checkouts_total") == 3
    assert total(samples, "sqlalchemy_pool_connections", worker=f"pid-{found['parent']}") == 1


@pytest.mark.parametrize(
    ("pids", "holder"),
    [
        (None, "second"),
        # Chosen identities (pool_writer --pid): 999's files are listed after 1000's.
        ((999, 1000), "second"),
        ((1000, 999), "second"),
        ((999, 1000), "first"),
        ((1000, 999), "first"),
    ],
)
def test_a_slot_file_removed_while_held_never_gives_two_workers_one_label(
    tmp_path: Path, procs: Procs, pids: tuple[int, int] | None, holder: str
) -> None:
    # Whatever the pids and the order the files are listed in, the worker holding the file
    # now under the slot's name keeps the slot; the other, whose file was removed, takes its
    # pid's label, at every scrape.
    chosen = [("--pid", str(pid)) for pid in pids] if pids else [(), ()]
    slot = slots.path(str(tmp_path), 0)
    _, first = procs.writer(tmp_path, *chosen[0])
    os.rename(slot, f"{slot}.aside")  # a clean-up that did not know
    _, second = procs.writer(tmp_path, *chosen[1])  # creates slot 0 anew, and holds it
    if holder == "first":
        os.rename(f"{slot}.aside", slot)  # the first one's file is back: the second's is gone
    held, removed = (second, first) if holder == "second" else (first, second)
    if pids:
        assert (first["parent"], second["parent"]) == pids
    for _ in range(2):
        samples = merged(tmp_path)
        found = labels_by_pid(samples)
        assert set(found) == {first["parent"], second["parent"]}
        assert found == {held["parent"]: "0", removed["parent"]: slots.fallback(removed["parent"])}
        assert len(per_worker_label_sets(samples)) == 2


def test_a_free_slot_file_the_worker_may_not_write_its_token_into_is_passed_over(
    tmp_path: Path, procs: Procs
) -> None:
    # Left by a worker of another user: read-only to this one (which runs, when root,
    # without the capability to ignore mode bits).
    slot = Path(slots.path(str(tmp_path), 0))
    slot.write_text("")
    slot.chmod(0o444)
    _, found = procs.writer(tmp_path, prefix=without_dac_override())
    assert labels_by_pid(merged(tmp_path)) == {found["parent"]: "1"}
    assert slot.read_text() == ""


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A tmpfs with room for two inodes: the directory itself and one file."""
    mount = tmp_path / "full"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,nr_inodes=2", "tmpfs", str(mount)], check=True
    )
    try:
        yield mount
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.mark.root
def test_a_worker_on_a_full_disk_goes_on(
    tiny_disk: Path, procs: Procs, capfd: pytest.CaptureFixture[str]
) -> None:
    # Room for the liveness lock only: no slot file, no stats file. The application still
    # instruments, checks out and waits for more work; it says once why it exports nothing.
    writer, found = procs.writer(tiny_disk, "--checkouts", "2")
    assert writer.poll() is None and found["parent"] > 0
    err = capfd.readouterr().err
    assert "cannot claim a worker slot" in err and "No space left on device" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("planted", ['x"}', "-1", "01", 7, None])
def test_a_worker_label_a_header_should_not_hold_is_replaced_by_the_pid(
    tmp_path: Path, procs: Procs, planted: object
) -> None:
    # Someone rewrote a live worker's header: its series stay its own, labelled by its pid.
    _, found = procs.writer(tmp_path)
    (name,) = stats_files(tmp_path)
    path = tmp_path / name
    data = path.read_bytes()
    meta, _ = header.parse(data[: layout.HEADER_BYTES])
    page = header.encode(meta["pool"], meta["info"], meta["pid"], meta["token"])
    body = json.loads(page[16:].rstrip(b"\0"))
    body["worker"] = planted
    text = json.dumps(body).encode()
    page = header.MAGIC + len(text).to_bytes(8, "little") + text
    path.write_bytes(page.ljust(layout.HEADER_BYTES, b"\0") + data[layout.HEADER_BYTES :])
    assert labels_by_pid(merged(tmp_path)) == {found["parent"]: slots.fallback(found["parent"])}
