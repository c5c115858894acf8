"""files.py, the one way into the multiprocess directory: a lock file held for a process's
life and let go in a forked child, and every open facing what anyone who can write the
directory may leave there (a symlink, a FIFO, a file replaced after it was opened, a full
disk, a file this process may not read or write)."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pool_exporter.multiprocess import files

from .support.forking import in_child
from .support.privileges import without_dac_override

TOKEN = "0123456789abcdef"
OTHER = "fedcba9876543210"


def within(call: Callable[[], Any], seconds: float = 10.0) -> Any:
    """`call()`'s result or exception, failing the test if it blocks (on a FIFO, say)."""
    result: list[Any] = []

    def run() -> None:
        try:
            result.append(call())
        except Exception as exc:
            result.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert result, f"{call} blocked for {seconds} s"
    return result[0]


def open_descriptors() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_a_lock_file_is_held_once_and_written_with_its_holders_token(tmp_path: Path) -> None:
    path = str(tmp_path / "a.lock")
    fd = files.lock(path, TOKEN)
    assert fd is not None
    assert Path(path).read_text() == TOKEN
    assert files.lock(path, OTHER) is None  # held: another description cannot take it
    assert files.read_token(path, len(TOKEN)) == TOKEN
    os.close(fd)  # as the kernel does when the holder exits
    again = files.lock(path, OTHER)
    assert again is not None
    assert files.read_token(path, len(TOKEN)) == OTHER
    os.close(again)


def test_a_lock_file_removed_or_replaced_by_another_is_not_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "a.lock"
    fd = files.lock(str(path), TOKEN)
    assert fd is not None and files.same_file(fd, str(path))
    path.rename(tmp_path / "aside.lock")
    assert not files.same_file(fd, str(path))  # gone
    path.write_text(OTHER)
    assert not files.same_file(fd, str(path))  # another file under the name
    path.unlink()
    path.symlink_to(tmp_path / "aside.lock")
    assert not files.same_file(fd, str(path))  # a link to it is not the name holding it
    os.close(fd)


def test_a_lock_the_taker_fails_to_take_is_tried_again_at_the_next_use(tmp_path: Path) -> None:
    held = files.LockFile()
    tries: list[int] = []

    def take() -> tuple[int | None, str]:
        tries.append(1)
        if len(tries) == 1:
            raise OSError(errno.ENOSPC, "full")
        fd = files.lock(str(tmp_path / "a.lock"), TOKEN)
        assert fd is not None
        return fd, TOKEN

    with pytest.raises(OSError):
        held.held(take)
    assert held.value is None
    assert held.held(take) == TOKEN
    assert held.held(take) == TOKEN
    assert len(tries) == 2
    held.drop_inherited()


def test_a_lock_file_dropped_in_a_forked_child_stays_the_parents_and_the_child_takes_its_own(
    tmp_path: Path,
) -> None:
    held = files.LockFile()
    parents = str(tmp_path / "parent.lock")
    assert held.held(lambda: (files.lock(parents, TOKEN), TOKEN)) == TOKEN
    inherited = held.fd
    assert inherited is not None

    def child() -> object:
        held.drop_inherited()
        try:
            os.fstat(inherited)
        except OSError as exc:
            closed = exc.errno == errno.EBADF
        else:
            closed = False
        dropped = (held.fd, held.value)
        still_the_parents = files.lock(parents, OTHER) is None
        own = held.held(lambda: (files.lock(str(tmp_path / "child.lock"), OTHER), OTHER))
        return closed, dropped, still_the_parents, own, files.read_token(parents, len(TOKEN))

    assert in_child(child) == (True, (None, None), True, OTHER, TOKEN)
    assert held.value == TOKEN and held.fd == inherited  # the parent's is untouched
    assert files.lock(parents, OTHER) is None
    held.drop_inherited()


def test_a_symlink_planted_at_a_lock_name_is_never_followed(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.write_text("keep")
    link = tmp_path / "a.lock"
    link.symlink_to(target)
    before = open_descriptors()
    with pytest.raises(OSError) as raised:
        files.lock(str(link), TOKEN)
    assert raised.value.errno == errno.ELOOP
    with pytest.raises(OSError):
        files.open_lock_file(str(link))
    assert files.read_token(str(link), len(TOKEN)) is None
    reasons: list[tuple[str, str]] = []
    assert files.open_regular(str(link), lambda p, r: reasons.append((p, r))) is None
    assert reasons == [(str(link), "symlink")]
    assert target.read_text() == "keep"
    assert open_descriptors() == before


def test_a_fifo_planted_at_a_lock_name_is_never_waited_on(tmp_path: Path) -> None:
    fifo = tmp_path / "a.lock"
    os.mkfifo(fifo)
    before = open_descriptors()
    assert isinstance(within(lambda: files.lock(str(fifo), TOKEN)), files.NotRegular)
    assert isinstance(within(lambda: files.open_lock_file(str(fifo))), files.NotRegular)
    assert within(lambda: files.read_token(str(fifo), len(TOKEN))) is None
    reasons: list[str] = []
    assert within(lambda: files.open_regular(str(fifo), lambda p, r: reasons.append(r))) is None
    assert reasons == ["not_regular"]
    assert open_descriptors() == before


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A memory filesystem of one page and four inodes (the directory and three files)."""
    path = tmp_path / "full"
    path.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4k,nr_inodes=4,mode=0755", "tmpfs", str(path)],
        check=True,
    )
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.mark.root
def test_a_full_disk_is_an_oserror_and_leaves_nothing_open_or_half_made(tmpfs: Path) -> None:
    before = open_descriptors()
    (tmpfs / "page").write_bytes(b"x" * 4096)  # the one page taken
    # an inode but no page for the token: the lock is not held, its descriptor closed
    with pytest.raises(OSError) as raised:
        files.lock(str(tmpfs / "a.lock"), TOKEN)
    assert raised.value.errno == errno.ENOSPC
    (tmpfs / "more").touch()  # the last inode taken
    for make in (
        lambda: files.lock(str(tmpfs / "b.lock"), TOKEN),
        lambda: files.create_temporary(str(tmpfs), "x."),
    ):
        with pytest.raises(OSError) as raised:
            make()
        assert raised.value.errno == errno.ENOSPC
    assert sorted(os.listdir(tmpfs)) == ["a.lock", "more", "page"]  # a.lock: empty, free
    assert open_descriptors() == before
    (tmpfs / "page").unlink()  # space is back: the name left empty is taken as any other
    fd = files.lock(str(tmpfs / "a.lock"), TOKEN)
    assert fd is not None
    assert files.read_token(str(tmpfs / "a.lock"), len(TOKEN)) == TOKEN
    os.close(fd)


# Run as root without CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, the mode bits apply to root
# as to anyone: a file of mode 0 is unreadable, one of 0444 is not writable.
AS_ANOTHER = """
import json, sys
from pool_exporter.multiprocess import files
unreadable, read_only = sys.argv[1], sys.argv[2]
out = {"token": files.read_token(unreadable, 16)}
reasons = []
out["opened"] = files.open_regular(unreadable, lambda p, r: reasons.append(r)) is not None
out["reasons"] = reasons
try:
    files.lock(read_only, "fedcba9876543210")
except PermissionError:
    out["lock"] = "PermissionError"
fd = files.open_lock_file(read_only)  # read-only is enough to flock
out["flock"] = files.try_lock(fd)
print(json.dumps(out))
"""


def test_a_lock_file_this_process_may_not_read_or_write_is_an_error_not_a_crash(
    tmp_path: Path,
) -> None:
    unreadable, read_only = tmp_path / "unreadable.lock", tmp_path / "read-only.lock"
    unreadable.write_text(TOKEN)
    unreadable.chmod(0)
    read_only.write_text(TOKEN)
    read_only.chmod(0o444)
    result = subprocess.run(
        [
            *without_dac_override(),
            sys.executable,
            "-c",
            AS_ANOTHER,
            str(unreadable),
            str(read_only),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert json.loads(result.stdout) == {
        "token": None,
        "opened": False,
        "reasons": ["unreadable"],
        "lock": "PermissionError",
        "flock": True,
    }
    assert read_only.read_text() == TOKEN
