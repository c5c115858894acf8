"""PgBouncer as the simulation plays it: server connections shared by every app pool, handed
to waiting clients first come, first served.

In transaction mode a client holds a server connection for one transaction, the database's
time; in session mode for as long as its own connection stays open, so an app pool's kept
connections keep theirs. A client that finds none free queues in the pooler, which has no
pool timeout of its own (its query_wait_timeout is minutes): the wait there is added to the
request's, whatever the app's pool_timeout says.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from .clock import Action
from .holds import Holds

TRANSACTION, SESSION = "transaction", "session"
MODES = (TRANSACTION, SESSION)


@dataclass(frozen=True)
class Pooler:
    """The pooler and the database behind the app pools: `servers` server connections (the
    pooler's pool, never more than the database's budget for it), its mode, and the
    database's time per transaction."""

    servers: int
    service: Holds
    mode: str = TRANSACTION

    def __post_init__(self) -> None:
        if self.servers < 1:
            raise ValueError(f"a pooler needs at least one server connection, got {self.servers}")
        if self.mode not in MODES:
            raise ValueError(f"the pooler's mode must be {' or '.join(MODES)}, got {self.mode!r}")


class PoolerModel:
    """`servers` server connections and the clients queued for one, on the clock."""

    def __init__(self, servers: int, callers: int) -> None:
        self.free = servers
        self.queue: deque[tuple[int, Action]] = deque()
        self.asked = [0.0] * callers
        self.waits = [0.0] * callers  # each caller's wait in the pooler

    def acquire(self, now: float, caller: int, then: Action) -> None:
        """`caller` needs a server connection: `then(now, caller)` once it has one."""
        if self.free > 0:
            self.free -= 1
            then(now, caller)
            return
        self.asked[caller] = now
        self.queue.append((caller, then))

    def release(self, now: float) -> None:
        """A server connection is free again: the longest waiting client takes it."""
        if not self.queue:
            self.free += 1
            return
        caller, then = self.queue.popleft()
        self.waits[caller] += now - self.asked[caller]
        then(now, caller)
