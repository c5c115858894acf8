"""The `worker` label: a slot number a live worker holds for its whole life, then hands on.

A pid label makes new series with every recycled worker (gunicorn's max_requests, deploys,
crashes). Instead each instrumented process takes the lowest free slot: an exclusive `flock`
on `pool_exporter_worker_<n>.lock` in the multiprocess directory, held until the process
exits, when the kernel drops it (SIGKILL included) and the next worker may take the number.
So a host has at most as many worker label values as it ever had workers alive at once.

A forked child does not inherit its parent's slot: the inherited descriptor is closed in the
child at fork (which leaves the parent's lock alone: a flock belongs to the open file
description, which the parent still has), and the child claims a slot of its own.

A worker that cannot claim a slot (the files cannot be created, are links or FIFOs someone
planted, the directory is full) still counts: it is labelled `pid-<pid>`, which no slot
number and no other live process can have.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import stat
import threading

log = logging.getLogger("pool_exporter")

PREFIX = "pool_exporter_worker_"
SUFFIX = ".lock"
# More slots than any host runs workers; the loop ends there even if every file is planted.
MAX_SLOTS = 4096
# Slot files that cannot be opened or locked in a row before a worker gives up: the directory
# refuses new files (full, read-only) rather than one file being odd.
_GIVE_UP = 16

# What a reader accepts as a worker label from a stats file's header.
VALID = re.compile(r"^(0|[1-9][0-9]{0,8}|pid-[0-9]{1,10})$")


def path(directory: str, slot: int) -> str:
    return os.path.join(directory, f"{PREFIX}{slot}{SUFFIX}")


def fallback(pid: int) -> str:
    """The label of a worker without a slot: cannot collide with a slot or a live process."""
    return f"pid-{pid}"


class _Claimed:
    """This process's slot: the pid that claimed it, so a forked child claims its own."""

    lock = threading.Lock()
    pid: int | None = None
    fd: int | None = None
    label: str | None = None


def _drop_inherited() -> None:
    """In a forked child: forget the parent's slot, closing the inherited descriptor (the
    parent keeps its lock: it holds the same open file description)."""
    if _Claimed.pid is None or _Claimed.pid == os.getpid():
        return
    if _Claimed.fd is not None:
        with contextlib.suppress(OSError):
            os.close(_Claimed.fd)
    _Claimed.pid, _Claimed.fd, _Claimed.label = None, None, None


def _after_fork_in_child() -> None:
    _Claimed.lock = threading.Lock()  # another parent thread may have held it at the fork
    _drop_inherited()


os.register_at_fork(after_in_child=_after_fork_in_child)


def label(directory: str) -> str:
    """This process's worker label, claiming the lowest free slot on first use."""
    pid = os.getpid()
    if _Claimed.pid is not None and _Claimed.pid != pid:
        # A forked child whose other at-fork handlers (the pool's reset) run before ours.
        _after_fork_in_child()
    with _Claimed.lock:
        if _Claimed.pid == pid and _Claimed.label is not None:
            return _Claimed.label
        try:
            slot, fd = claim(directory)
        except OSError as exc:
            log.warning(
                "pool-exporter cannot claim a worker slot in %s (%s): this process's series are "
                "labelled worker=%r",
                directory,
                exc,
                fallback(pid),
            )
            slot, fd = None, None
        _Claimed.pid, _Claimed.fd = pid, fd
        _Claimed.label = fallback(pid) if slot is None else str(slot)
        return _Claimed.label


def claim(directory: str) -> tuple[int, int]:
    """The lowest slot whose lock this process could take, and the descriptor holding it;
    OSError when none can be taken."""
    failures: list[OSError] = []
    for slot in range(MAX_SLOTS):
        try:
            fd = _try(path(directory, slot))
        except OSError as exc:
            failures.append(exc)
            if len(failures) >= _GIVE_UP:
                break
            continue
        if fd is not None:
            return slot, fd
        failures.clear()  # a slot held by a live worker: the directory works
    last = failures[-1] if failures else OSError(errno.EAGAIN, "every slot is taken")
    raise OSError(last.errno, f"no slot could be claimed (last: {last.strerror or last})")


def _try(name: str) -> int | None:
    """A descriptor holding `name`'s lock; None when a live worker holds it."""
    # Never a symlink (it could point anywhere), never blocking on a FIFO someone made.
    flags = os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(name, flags, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, f"{name} is not a regular file")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        # Locked a file someone has since removed or replaced: another worker could create
        # the name again and hold the same slot. Take the next one instead.
        st, own = os.stat(name, follow_symlinks=False), os.fstat(fd)
        if (st.st_dev, st.st_ino) != (own.st_dev, own.st_ino):
            os.close(fd)
            return None
    except BaseException:
        with contextlib.suppress(OSError):
            os.close(fd)
        raise
    return fd
