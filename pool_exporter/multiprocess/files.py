"""Opening and writing what the multiprocess directory holds without trusting it.

Anyone who can write the directory can put anything there under a metric file's name. A FIFO
would block an open for good, a symlink to a device would be read forever, a truncated file
would break a merge. So files are opened without following symlinks and without blocking,
and only regular files of a sane size are read; every other one is reported to `BadFiles`.
A file is created under an unpredictable temporary name with O_EXCL (nothing planted there in
advance is opened), written completely or not at all, and renamed into place.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable

log = logging.getLogger("pool_exporter")

_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
_CREATE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
# Readable by a reader running as another user, whatever the writer's umask.
MODE = 0o644
TEMPORARY = ".tmp"


def create_temporary(directory: str, prefix: str) -> tuple[int, str]:
    """A new empty file `<prefix><random>.tmp` in `directory`, opened read-write, mode MODE."""
    path = os.path.join(directory, f"{prefix}{uuid.uuid4().hex[:16]}{TEMPORARY}")
    fd = os.open(path, _CREATE, MODE)
    try:
        os.fchmod(fd, MODE)  # the umask applied to os.open's mode
    except BaseException:
        os.close(fd)
        remove(path)
        raise
    return fd, path


class LockFile:
    """A lock file this process holds for its life, and what it holds it as (a token, a
    slot's label): the kernel drops the lock when the process exits, however it exits.

    A forked child drops it (fork.py calls `drop_inherited`): the child's copy of the
    descriptor would keep the lock after the parent exits. Closing the copy leaves the
    parent's lock alone: a flock belongs to the open file description, which the parent
    still has.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self.fd: int | None = None
        self.value: str | None = None

    def held(self, take: Callable[[], tuple[int | None, str]]) -> str:
        """What this process holds the lock as, taking it with `take` (a descriptor, or
        None when it holds none, and the value) on first use; whatever `take` raises, it
        is tried again at the next call."""
        with self._mutex:
            if self.value is None:
                self.fd, self.value = take()
            return self.value

    def drop_inherited(self) -> None:
        """In a forked child: forget the parent's lock and close the copy of its
        descriptor (before anything in the child takes a lock of its own)."""
        self._mutex = threading.Lock()  # another parent thread may have held it at the fork
        fd, self.fd, self.value = self.fd, None, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def write_all(fd: int, data: bytes, offset: int = 0) -> None:
    """All of `data` at `offset`; OSError (ENOSPC, say) when it cannot be written whole."""
    view = memoryview(data)
    while view:
        done = os.pwrite(fd, view, offset)
        if done <= 0:
            raise OSError(errno.EIO, "write made no progress")
        view, offset = view[done:], offset + done


def remove(path: str) -> None:
    """Unlink `path` if it is there (a link is removed, never followed)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


class BadFiles:
    """The files skipped at one scrape, by reason; each (file, reason) is logged once."""

    def __init__(self) -> None:
        self.now: dict[str, str] = {}
        self._logged: set[tuple[str, str]] = set()

    def start(self) -> None:
        self.now = {}

    def __call__(self, path: str, reason: str) -> None:
        self.now[path] = reason
        if (path, reason) not in self._logged:
            self._logged.add((path, reason))
            log.warning("skipping %s in the multiprocess directory: %s", path, reason)

    def counts(self) -> collections.Counter[str]:
        return collections.Counter(self.now.values())


def open_regular(path: str, bad: Callable[[str, str], None], max_bytes: int) -> int | None:
    """A read-only descriptor of `path` if it is a regular file of at most `max_bytes`."""
    try:
        fd = os.open(path, _FLAGS)
    except FileNotFoundError:  # removed since the listing: a reaper's work
        return None
    except OSError as exc:
        bad(path, "symlink" if exc.errno == errno.ELOOP else "unreadable")
        return None
    st = os.fstat(fd)
    reason = None
    if not stat.S_ISREG(st.st_mode):
        reason = "not_regular"
    elif st.st_size > max_bytes:
        reason = "too_large"
    if reason is not None:
        os.close(fd)
        bad(path, reason)
        return None
    return fd


def read_regular(path: str, bad: Callable[[str, str], None], max_bytes: int) -> bytes | None:
    """The whole content of `path` if it is a regular file of at most `max_bytes`."""
    fd = open_regular(path, bad, max_bytes)
    if fd is None:
        return None
    try:
        return os.pread(fd, max_bytes, 0)
    except OSError:
        bad(path, "unreadable")
        return None
    finally:
        os.close(fd)
