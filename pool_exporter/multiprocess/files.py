"""Every file the multiprocess directory holds, opened one way, without trusting it.

Anyone who can write the directory can put anything there under one of its names. A FIFO
would block an open for good, a symlink to a device would be read forever, a truncated file
would break a merge. So every `os.open` of the directory is here: nothing is opened through
a symlink or blocks on a FIFO, and only regular files are used (a reader also bounds their
size, and reports every other one to `BadFiles`). A file is created under an unpredictable
name with O_EXCL (nothing planted there in advance is opened), written completely or not at
all, and renamed into place (`create_mapped` for the workers' mapped files). A lock file is
created where missing; a process takes one only when the file it locked is the one under the
name (`lock`), and keeps it for its life (`LockFile`).
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import logging
import mmap
import os
import stat
import threading
import uuid
from collections.abc import Callable

log = logging.getLogger("pool_exporter")

# Never through a symlink, never waiting on a FIFO, never inherited by a program exec'd.
_SAFE = os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
# Readable by a reader running as another user, whatever the writer's umask.
MODE = 0o644
# The end of a file's name while it is written, before it is renamed into place.
UNFINISHED = ".tmp"


class NotRegular(OSError):
    """A name that holds something other than a regular file (a FIFO, a device)."""


def create_temporary(directory: str, prefix: str) -> tuple[int, str]:
    """A new empty file `<prefix><random>.tmp` in `directory`, opened read-write, mode MODE."""
    path = os.path.join(directory, f"{prefix}{uuid.uuid4().hex[:16]}{UNFINISHED}")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _SAFE, MODE)
    try:
        os.fchmod(fd, MODE)  # the umask applied to os.open's mode
    except BaseException:
        os.close(fd)
        remove(path)
        raise
    return fd, path


def create_mapped(
    path: str,
    prefix: str,
    size: int,
    page: bytes,
    fill: Callable[[mmap.mmap], None] | None = None,
) -> mmap.mmap:
    """A new file of `size` bytes at `path`, starting with `page`, and its shared mapping.

    It is made under a temporary name (create_temporary with `prefix`, in `path`'s directory),
    its space reserved first (a full filesystem is an OSError here rather than a SIGBUS at the
    first store into a page it cannot provide), `page` written whole, `fill` run on the
    mapping, and only then renamed to `path`: a reader never sees it unfinished. Whatever
    step fails, nothing is left behind."""
    fd, tmp = create_temporary(os.path.dirname(path), prefix)
    try:
        try:
            os.posix_fallocate(fd, 0, size)
            write_all(fd, page)
            mapped = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        try:
            if fill is not None:
                fill(mapped)
            os.rename(tmp, path)
        except BaseException:
            mapped.close()
            raise
    except BaseException:
        remove(tmp)
        raise
    return mapped


def open_lock_file(path: str, *, writable: bool = False) -> int:
    """A descriptor of the lock file `path`, created (mode MODE) if missing; OSError when it
    cannot be, NotRegular when the name holds something else. Read-only is enough to flock
    and works on a lock file another user made; `writable` to write its holder's token."""
    fd = os.open(path, (os.O_RDWR if writable else os.O_RDONLY) | os.O_CREAT | _SAFE, MODE)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(errno.EINVAL, f"{path} is not a regular file")
        with contextlib.suppress(PermissionError):  # another user's: its mode is set
            os.fchmod(fd, MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def try_lock(fd: int) -> bool:
    """Take the exclusive flock of `fd` if nobody holds it; False when another does."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def same_file(fd: int, path: str) -> bool:
    """Whether `path` names the file `fd` has open now (not a link to it); False when the
    name is gone or cannot be looked at: not proven to be the same."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except OSError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def lock(path: str, token: str) -> int | None:
    """A descriptor holding the exclusive flock of the lock file `path`, with `token` written
    over its start; None when another process holds it, or when the file was removed or
    replaced before it was locked (the name is another file's now). OSError when it cannot
    be opened (NotRegular: a FIFO or a device planted there)."""
    fd = open_lock_file(path, writable=True)
    try:
        if try_lock(fd) and same_file(fd, path):
            # Same length every time, over whatever an earlier holder wrote.
            write_all(fd, token.encode())
            return fd
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return None


def read_token(path: str, size: int) -> str | None:
    """The token a lock file's holder wrote at its start; None when the name is gone or
    holds no regular file."""
    fd = open_regular(path)
    if fd is None:
        return None
    try:
        return os.pread(fd, size, 0).decode("ascii", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _unreported(path: str, reason: str) -> None:
    pass


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


def sync_directory(directory: str) -> None:
    """fsync `directory`: a rename into it survives a crash of the machine."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
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


def open_regular(
    path: str, bad: Callable[[str, str], None] | None = None, max_bytes: int | None = None
) -> int | None:
    """A read-only descriptor of `path` if it is a regular file (of at most `max_bytes`);
    None when it is gone, or is not (`bad`, when given, hears why)."""
    bad = bad or _unreported
    try:
        fd = os.open(path, os.O_RDONLY | _SAFE)
    except FileNotFoundError:  # removed since the listing: a reaper's work
        return None
    except OSError as exc:
        bad(path, "symlink" if exc.errno == errno.ELOOP else "unreadable")
        return None
    st = os.fstat(fd)
    reason = None
    if not stat.S_ISREG(st.st_mode):
        reason = "not_regular"
    elif max_bytes is not None and st.st_size > max_bytes:
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
