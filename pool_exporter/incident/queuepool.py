"""SQLAlchemy's QueuePool as the simulation plays it: which caller gets a returned connection,
and when a waiting caller gives up.

From `sqlalchemy/pool/impl.py` and `sqlalchemy/util/queue.py` (2.1.9, as installed here): a
caller that finds no connection and no overflow left calls `Queue.get(True, timeout)`, which
waits on a `threading.Condition` until a connection is there or its deadline (`endtime`, fixed
when it started) passes. A returned connection is `put()` back and `notify()` wakes the caller
that has waited longest, which must run again before it takes the connection. A caller that
reaches `get()` in that moment (one already on its way when the connection came back) finds
the connection and leaves with it; the woken caller finds the queue empty and waits again,
now at the end of the waiter list (`Condition.wait()` appends it), counting down the same
deadline. A caller whose deadline passes looks at the queue once more before it gives up
(`Queue.get` tests for an item before it tests the time), and takes a connection it finds
there: one whose woken caller has not run yet.

The moment in which a woken caller loses lasts an exponential time of mean `wake`, measured as
the share of wake-ups lost in replays (bench/pool_wakeups.py; docs/demo.md).

Behind a pooler in session mode a connection's server connection lasts as long as the
connection, so the model can also say which checkouts opened a connection and when one
closes: a connection returned while none waits is kept when fewer than `pool_size` are idle
(the pool's queue has room) and closed otherwise, as QueuePool's checkin does.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Sequence

from .clock import Clock

WAITING, SERVED, GAVE_UP = 0, 1, 2


class QueuePoolModel:
    """One pool of `servers` connections (opened at once when first needed) and its callers,
    numbered by their `arrivals` (seconds). A caller is given a connection through `granted`
    (now, caller), which schedules its return (`release`); one that waits gives up `timeout`
    seconds after it arrived."""

    def __init__(
        self,
        clock: Clock,
        rng: random.Random,
        arrivals: Sequence[float],
        granted: Callable[[float, int], None],
        *,
        servers: int,
        timeout: float,
        wake: float,
        pool_size: int | None = None,
        closed: Callable[[float], None] | None = None,
    ) -> None:
        self.clock, self.rng, self.arrivals, self.granted = clock, rng, arrivals, granted
        self.timeout, self.wake = timeout, wake
        self.free = servers  # connections not checked out (idle, or not opened yet)
        # Which connections are open, for a caller that asks (`closed`): at most `pool_size`
        # idle ones are kept, and `opened[caller]` says whether its checkout opened one.
        self.pool_size, self.closed = (servers if pool_size is None else pool_size), closed
        self.idle = 0
        self.opened = bytearray(len(arrivals))
        self.waiting: deque[int] = deque()  # in Condition.wait(), longest waiting first
        self.state = bytearray(len(arrivals))  # WAITING, SERVED or GAVE_UP
        self.woken = bytearray(len(arrivals))  # notified, not yet running again
        self.queued = bytearray(len(arrivals))  # found no connection when it arrived
        self.waits = [0.0] * len(arrivals)  # a caller that gave up: the timeout
        self.timeouts = 0

    def arrive(self, now: float, caller: int) -> None:
        if self.free > 0:
            self._take(now, caller)
            return
        self.queued[caller] = 1
        self.waiting.append(caller)
        self.clock.at(now + self.timeout, self._deadline, caller)

    def release(self, now: float, caller: int) -> None:
        """`caller` returns its connection: notify() wakes the longest waiter still waiting
        (one that gave up is skipped when its turn comes, not searched for)."""
        self.free += 1
        while self.waiting:
            waiter = self.waiting.popleft()
            if self.state[waiter] == WAITING:
                self.idle += 1
                self.woken[waiter] = 1
                delay = self.rng.expovariate(1 / self.wake) if self.wake > 0 else 0.0
                self.clock.at(now + delay, self._wakes, waiter)
                return
        if self.idle < self.pool_size:
            self.idle += 1
        elif self.closed is not None:
            self.closed(now)

    def _wakes(self, now: float, caller: int) -> None:
        self.woken[caller] = 0
        if self.state[caller] != WAITING:
            return
        if self.free > 0:
            self._take(now, caller)
        elif now - self.arrivals[caller] >= self.timeout:
            self._give_up(caller)
        else:
            self.waiting.append(caller)  # beaten to it: the back of the line, same deadline

    def _deadline(self, now: float, caller: int) -> None:
        if self.state[caller] != WAITING or self.woken[caller]:
            return  # served, or woken: its wake-up decides
        if self.free > 0:  # the last look: a connection whose woken caller has not run yet
            self._take(now, caller)
        else:
            self._give_up(caller)

    def _take(self, now: float, caller: int) -> None:
        self.free -= 1
        if self.idle > 0:
            self.idle -= 1
        else:
            self.opened[caller] = 1
        self.state[caller] = SERVED
        self.waits[caller] = now - self.arrivals[caller]
        self.granted(now, caller)

    def _give_up(self, caller: int) -> None:
        self.state[caller] = GAVE_UP
        self.waits[caller] = self.timeout
        self.timeouts += 1
