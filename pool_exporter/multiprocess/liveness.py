"""Worker liveness without a gunicorn hook: one flock-held lock file per instrumented process.

prometheus-client's `live*` gauge modes forget a worker only when someone calls
`mark_process_dead(pid)`. Each instrumented process therefore holds an exclusive `flock` on
`pool_exporter_<pid>.lock` in the multiprocess directory for as long as it lives; the kernel
drops that lock when the process exits, however it exits (SIGKILL and OOM kills included).
Whoever reads the directory (the sidecar, before each scrape) calls `reap()`: a lock it can
take belongs to a dead process, whose gauges it then drops. flock is shared by every container
that mounts the same local directory (an emptyDir) on one node; it is not reliable over NFS.

The lock must be held before the process writes any gauge file, and `reap()` deletes files only
while holding the dead process's lock: so a reaper never deletes the files of a live process,
even when the kernel has given a dead worker's pid to a new one.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field

from prometheus_client.multiprocess import mark_process_dead

log = logging.getLogger("pool_exporter")

PREFIX = "pool_exporter_"
SUFFIX = ".lock"
_NAME = re.compile(rf"^{PREFIX}(\d+){re.escape(SUFFIX)}$")

# A reaper holds a dead process's lock for a few file deletions; a process that meets it waits
# this long at most before it gives up its liveness (never the application's work).
_RETRIES = 50
_RETRY_SECONDS = 0.01


def lock_path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{PREFIX}{pid}{SUFFIX}")


def multiprocess_dir() -> str | None:
    # The lower-case name is the one prometheus-client still honours (deprecated).
    legacy = os.environ.get("prometheus_multiproc_dir")  # noqa: SIM112
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or legacy


class _Held:
    """This process's lock: the pid that took it, so a forked child knows to take its own."""

    lock = threading.Lock()
    pid: int | None = None
    fd: int | None = None


def hold(directory: str | None = None) -> bool:
    """Take this process's liveness lock unless it already holds it; True when held.

    Called before the process writes its first gauge, and again in a forked child (which
    inherited its parent's descriptor: closing that copy leaves the parent's lock alone, since
    flock belongs to the open file description both share until one closes it)."""
    directory = directory or multiprocess_dir()
    if not directory:
        return False
    pid = os.getpid()
    if _Held.pid is not None and _Held.pid != pid:
        # A forked child, called from the at-fork reset before it can start a thread: a lock
        # some other parent thread held at the fork would stay held here forever.
        _Held.lock = threading.Lock()
    with _Held.lock:
        if _Held.pid == pid:
            return True
        if _Held.fd is not None:  # the parent's, inherited across fork
            _close(_Held.fd)
            _Held.fd, _Held.pid = None, None
        try:
            fd = _acquire(lock_path(directory, pid))
        except Exception as exc:  # liveness is best effort; the application goes on
            log.warning(
                "pool-exporter could not take its liveness lock in %s (%s): this process's "
                "gauges will stay after it exits unless child_exit calls mark_process_dead",
                directory,
                exc,
            )
            return False
        _Held.fd, _Held.pid = fd, pid
        return True


def _acquire(path: str) -> int:
    for _ in range(_RETRIES):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # A reaper is removing a dead process that had our pid; it unlinks this file next.
            os.close(fd)
            time.sleep(_RETRY_SECONDS)
            continue
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            return fd
        os.close(fd)  # we locked a file a reaper had already unlinked: take the new one
    raise OSError(errno.EWOULDBLOCK, f"{path} stayed locked by another process")


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino)


def _close(fd: int) -> None:
    with contextlib.suppress(OSError):
        os.close(fd)


def forget(pid: int, directory: str | None = None) -> None:
    """Drop a process known to be dead: its live gauges and its lock file (gunicorn's
    child_exit knows the pid before any reaper would notice)."""
    directory = directory or multiprocess_dir()
    if not directory:
        return
    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    _unlink(lock_path(directory, pid))


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


@dataclass
class Reaped:
    """What one pass over the directory found."""

    live: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)


def reap(directory: str) -> Reaped:
    """Drop the gauges of every process whose lock file nobody holds any more.

    Processes without a lock file (not instrumented by pool-exporter, or using child_exit
    only) are left alone."""
    found = Reaped()
    for name in sorted(os.listdir(directory)):
        match = _NAME.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        path = os.path.join(directory, name)
        try:
            # Read-only is enough for flock, and works when the sidecar runs as another user.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # another reaper, or the process itself, removed it
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                found.live.append(pid)
                continue
            if not _same_file(fd, path):
                continue
            # Files first, lock file last, all while holding the lock: a new process with
            # this pid waits on the lock and only then writes its own files.
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            _unlink(path)
            found.dead.append(pid)
        finally:
            os.close(fd)
    return found
