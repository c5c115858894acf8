"""The simulation's clock: actions due at given times, run in time order.

Every layer of a simulated stack (today the application's QueuePool; a pooler or a database
can be added beside it) schedules its own actions on one clock, so that they interleave as
they would in time.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable

Action = Callable[[float, int], None]  # (now, the caller it concerns)


class Clock:
    """Actions due at times; those due at the same time run in the order they were set."""

    def __init__(self) -> None:
        self._due: list[tuple[float, int, Action, int]] = []
        self._set = 0

    def at(self, when: float, action: Action, caller: int) -> None:
        self._set += 1
        heapq.heappush(self._due, (when, self._set, action, caller))

    def run(self) -> None:
        """Until nothing is due: each action may set more."""
        due = self._due
        while due:
            when, _, action, caller = heapq.heappop(due)
            action(when, caller)
