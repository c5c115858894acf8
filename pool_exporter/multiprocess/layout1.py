"""The slot map of layout 1, the released stats-file layout whose header did not describe it.

A layout-1 file (0.x releases before the header named its slots) is read with this map, found
by the `layout` signature its header carries; every layout since describes itself. Data only:
a released layout never changes.
"""

from __future__ import annotations

from typing import Any

_WAIT = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 20.0,
         25.0, 30.0, 45.0, 60.0]  # fmt: skip
_HOLD = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
         60.0, 300.0]  # fmt: skip
_CONNECT = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]
_HOOKS_1 = ["checkout", "checkin", "detach", "connect", "close", "close_detached", "invalidate",
            "soft_invalidate", "recreate", "fork", "long_checkout"]  # fmt: skip

LAYOUT_1: dict[str, dict[str, Any]] = {
    "active": {"at": 0},
    "has_capacity": {"at": 1},
    "size": {"at": 2},
    "max_overflow": {"at": 3},
    "timeout": {"at": 4, "float": True},
    "in_use": {"at": 5},
    "idle": {"at": 6},
    "waiting": {"at": 7},
    "checkouts": {"at": 8},
    "timeouts": {"at": 9},
    "cancellations": {"at": 10},
    "checkout_errors": {"at": 11},
    "connects": {"at": 12},
    "connect_errors": {"at": 13},
    "closes": {"at": 14},
    "detaches": {"at": 15},
    "invalidations": {"at": 16, "keys": ["False", "True"]},
    "hook_errors": {"at": 18, "keys": _HOOKS_1},
    "wait": {"at": 29, "bounds": _WAIT},
    "hold": {"at": 50, "bounds": _HOLD},
    "connect_time": {"at": 68, "bounds": _CONNECT},
    "oldest_checkout_started": {"at": 83, "float": True},
    "long_checkouts": {"at": 84},
    "gc_returned": {"at": 85},
}

# By the `layout` signature in the header.
BY_SIGNATURE: dict[str, dict[str, dict[str, Any]]] = {"4bdc5d1b77cdd09a": LAYOUT_1}
