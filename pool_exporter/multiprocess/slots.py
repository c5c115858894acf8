"""The `worker` label: a slot number a live worker holds for its whole life, then hands on.

A pid label makes new series with every recycled worker (gunicorn's max_requests, deploys,
crashes). Instead each instrumented process takes the lowest free slot: an exclusive `flock`
on `pool_exporter_worker_<n>.lock` in the multiprocess directory, held until the process
exits, when the kernel drops it (SIGKILL included) and the next worker may take the number.
So a host has at most as many worker label values as it ever had workers alive at once.

A forked child does not inherit its parent's slot: it lets it go (fork.py) and claims one of
its own.

A slot file holds the token of the worker holding it (its liveness lock's, liveness.py, which
is in its stats files' headers too). Two workers can claim one slot only when its file was
removed while a worker held it: the next one creates the name anew. Then the one whose token
is in the file under the slot's name now keeps the slot's label (`holder`), and the other
takes its pid's label, at every scrape, whatever the pids. A slot file another user made
is passed over: this worker could not write its token into it.

A worker that cannot claim a slot (the files cannot be created, are links or FIFOs someone
planted, the directory is full) still counts: it is labelled `pid-<pid>`, which no slot
number and no other live process can have.
"""

from __future__ import annotations

import errno
import logging
import os
import re

from . import files
from .liveness import TOKEN_BYTES

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
_SLOT = re.compile(r"^(0|[1-9][0-9]{0,8})$")


def path(directory: str, slot: int) -> str:
    return os.path.join(directory, f"{PREFIX}{slot}{SUFFIX}")


def fallback(pid: int) -> str:
    """The label of a worker without a slot: cannot collide with a slot or a live process."""
    return f"pid-{pid}"


# This process's slot, its label the value; a forked child lets its parent's go (fork.py).
CLAIMED = files.LockFile()


def label(directory: str, pid: int, token: str) -> str:
    """This process's worker label, claiming the lowest free slot on first use. `pid` is this
    process (fork.this_process()), `token` its liveness lock's, written into the slot file."""
    return CLAIMED.held(lambda: _claim_or_fall_back(directory, pid, token))


def _claim_or_fall_back(directory: str, pid: int, token: str) -> tuple[int | None, str]:
    try:
        slot, fd = claim(directory, token)
    except OSError as exc:
        log.warning(
            "pool-exporter cannot claim a worker slot in %s (%s): this process's series are "
            "labelled worker=%r",
            directory,
            exc,
            fallback(pid),
        )
        return None, fallback(pid)
    return fd, str(slot)


def claim(directory: str, token: str) -> tuple[int, int]:
    """The lowest slot whose lock this process could take, and the descriptor holding it;
    OSError when none can be taken."""
    failures: list[OSError] = []
    for slot in range(MAX_SLOTS):
        try:
            # Never a symlink (it could point anywhere), never blocking on a FIFO someone made;
            # a file locked after it was removed or replaced is passed over: another worker
            # could create the name again and hold the same slot.
            fd = files.lock(path(directory, slot), token)
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


def holder(directory: str, worker: str) -> str | None:
    """The token of the worker holding the slot `worker` names, as its file under the slot's
    name says now; None for a label that is no slot, or a file that is gone or not ours."""
    if _SLOT.match(worker) is None:
        return None
    return files.read_token(path(directory, int(worker)), TOKEN_BYTES)
