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
even when the kernel has given a dead worker's pid to a new one. The lock file holds a random
token of the process that holds it, which also names its stats files (filenames.py): a stats file
whose token is not the one in its pid's held lock file belongs to a process that has exited.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from prometheus_client.multiprocess import mark_process_dead

from . import directory as multiprocess_dir
from . import files

log = logging.getLogger("pool_exporter")

PREFIX = "pool_exporter_"
SUFFIX = ".lock"
_NAME = re.compile(rf"^{PREFIX}(\d+){re.escape(SUFFIX)}$")
_LIVE_GAUGE = re.compile(r"^gauge_live[a-z]*_(\d+)\.db$")

# A reaper holds a dead process's lock for a few file deletions; a process that meets it waits
# this long at most before it gives up its liveness (never the application's work).
_RETRIES = 50
_RETRY_SECONDS = 0.01

TOKEN_BYTES = 16  # hex characters

# This process's lock, its token the value; a forked child lets its parent's go (fork.py).
HELD = files.LockFile()
_warned = False


def lock_path(directory: str, pid: int) -> str:
    return os.path.join(directory, f"{PREFIX}{pid}{SUFFIX}")


def token() -> str | None:
    """The token of this process's lock, None until it holds one."""
    return HELD.value


def hold(directory: str, pid: int) -> bool:
    """Take this process's liveness lock unless it holds it already; True when held. `pid`
    is this process (fork.this_process()). Called before the process writes its first stats
    file; a forked child let its parent's lock go before (fork.py)."""
    global _warned
    try:
        HELD.held(lambda: _take(lock_path(directory, pid)))
    except Exception as exc:  # liveness is best effort; the application goes on
        log.log(
            logging.DEBUG if _warned else logging.WARNING,
            "pool-exporter could not take its liveness lock in %s (%s): this process's "
            "pool metrics are not written there until it can",
            directory,
            exc,
        )
        _warned = True
        return False
    return True


def _take(path: str) -> tuple[int, str]:
    own = os.urandom(TOKEN_BYTES // 2).hex()
    for _ in range(_RETRIES):
        fd = files.lock(path, own)  # a planted link is never followed, a FIFO never waited on
        if fd is not None:
            return fd, own
        # A reaper is removing a dead process that had our pid, and unlinks this file next.
        time.sleep(_RETRY_SECONDS)
    raise OSError(errno.EWOULDBLOCK, f"{path} stayed locked by another process")


def forget(pid: int, directory: str | None = None) -> None:
    """Drop a process known to be dead: its live gauges and its lock file (gunicorn's
    child_exit knows the pid before any reaper would notice). Only if its lock is free: a new
    process may already have been given the pid."""
    directory = directory or multiprocess_dir()
    if not directory:
        return
    path = lock_path(directory, pid)
    fd = files.open_regular(path)
    if fd is None:
        if not os.path.lexists(path):
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
        return  # else unknown: never forget a process that may be alive
    try:
        if files.try_lock(fd) and files.same_file(fd, path):
            mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
            files.remove(path)
    finally:
        os.close(fd)


@dataclass
class Reaped:
    """What one pass over the directory found: live pids with their tokens, dead pids, and
    pids whose lock could not be tried (unknown: an unreadable lock file, no descriptor
    left). Only a dead process's files are ever folded or removed."""

    live: dict[int, str] = field(default_factory=dict)
    dead: list[int] = field(default_factory=list)
    unknown: set[int] = field(default_factory=set)


def reap(
    directory: str,
    names: list[str] | None = None,
    bad: Callable[[str, str], None] | None = None,
) -> Reaped:
    """Drop the gauges of every process whose lock file nobody holds any more.

    `names` is a listing of the directory taken before (default: list it now); `bad` hears of
    each file that is not what its name says, with the reason, and of each it cannot remove.
    Processes without a lock file (not instrumented by pool-exporter, or using child_exit
    only) are left alone."""
    found = Reaped()
    names = os.listdir(directory) if names is None else names
    # mark_process_dead globs the directory once per pid: only for pids that have such files.
    gauges = {int(m.group(1)) for m in map(_LIVE_GAUGE.match, names) if m is not None}
    for name in sorted(names):
        match = _NAME.match(name)
        if match is None:
            continue
        pid = int(match.group(1))
        path = os.path.join(directory, name)
        fd = files.open_regular(path, bad)  # read-only: the reader may be another user
        if fd is None:
            if os.path.lexists(path):
                found.unknown.add(pid)
            continue
        try:
            try:
                free = files.try_lock(fd)
            except OSError:  # ENOLCK, say: cannot tell
                found.unknown.add(pid)
                continue
            if not free:
                try:
                    found.live[pid] = os.pread(fd, TOKEN_BYTES, 0).decode("ascii", "replace")
                except OSError:  # held, but whose files are whose cannot be told
                    found.unknown.add(pid)
                continue
            if not files.same_file(fd, path):
                found.unknown.add(pid)  # replaced since the listing: the next scrape sees
                continue
            # Files first, lock file last, all while holding the lock: a new process with
            # this pid waits on the lock and only then writes its own files.
            try:
                if pid in gauges:
                    mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
                files.remove(path)
            except OSError:  # another user's file in a sticky directory, say
                if bad is not None:
                    bad(path, "cannot_remove")
            else:
                found.dead.append(pid)
        finally:
            os.close(fd)
    return found
