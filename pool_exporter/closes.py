"""Why SQLAlchemy closed a DBAPI connection: the pool's code path that closed it.

The `close` and `close_detached` events say which connection closes, never why. Their order
with the other events does not tell either: an overflow discard and a `dispose()` both close
an idle connection with nothing before it, and a recycle at checkout closes one with no
`invalidate` (docs/internals.md). What does tell is the SQLAlchemy function that called the
close, a few frames up from the listener: so the listeners read it there, on this rare path,
and the checkout and checkin pay nothing for it. Each reason is checked against real pools in
tests/test_close_reasons.py (SQLAlchemy 2.1 and 2.0); a path SQLAlchemy adds later is counted
as `other`, so the reasons still sum to every close.
"""

from __future__ import annotations

import sys
import time
from types import CodeType, FrameType
from typing import Any

from sqlalchemy.pool import base

from .metrics import (
    DETACHED_CLOSE,
    DISPOSE_CLOSE,
    GC_CLOSE,
    INVALIDATED_CLOSE,
    OTHER_CLOSE,
    OVERFLOW_CLOSE,
    RECYCLE_CLOSE,
    RESET_FAILED_CLOSE,
)

# How far up from a listener the pool's close may be: the listener, this project's guard
# around it and SQLAlchemy's dispatch come first.
_DEPTH = 8


def _code(owner: Any, name: str) -> CodeType | None:
    function = getattr(owner, name, None)
    return getattr(function, "__code__", None)


# _ConnectionRecord.__close (name-mangled), which fires `close`; `close()` calls it too.
_RECORD_CLOSE = _code(base._ConnectionRecord, "_ConnectionRecord__close")
_RECORD_PUBLIC_CLOSE = _code(base._ConnectionRecord, "close")
_FINALIZE_FAIRY = _code(base, "_finalize_fairy")

# The function that called the record's close, by name (subclasses of the pools keep them):
# QueuePool and NullPool close a connection returned to a pool with no room for it in
# `_do_return_conn`, SingletonThreadPool its connections beyond pool_size in `_cleanup`; every
# pool closes its idle connections in `dispose`.
_BY_CALLER = {
    "_do_return_conn": OVERFLOW_CLOSE,
    "_cleanup": OVERFLOW_CLOSE,
    "dispose": DISPOSE_CLOSE,
}


def _up(frame: FrameType | None, code: CodeType | None) -> FrameType | None:
    """The nearest frame running `code` from `frame` up, within _DEPTH frames."""
    for _ in range(_DEPTH):
        if frame is None or code is None:
            return None
        if frame.f_code is code:
            return frame
        frame = frame.f_back
    return None


def pooled_close_reason(record: Any) -> str:
    """Why `record`'s connection is being closed; called from inside the `close` listener."""
    closing = _up(sys._getframe(1), _RECORD_CLOSE)
    caller = closing.f_back if closing is not None else None
    if caller is not None and caller.f_code is _RECORD_PUBLIC_CLOSE:
        caller = caller.f_back
    if caller is None:
        return OTHER_CLOSE
    name = caller.f_code.co_name
    if name == "get_connection":
        # At checkout: past pool_recycle (tested first, as get_connection does), or
        # invalidated: the whole pool after a disconnect, or this connection softly.
        return RECYCLE_CLOSE if _past_recycle(record) else INVALIDATED_CLOSE
    if name == "invalidate":
        # The reset on return raised: _finalize_fairy invalidates the connection itself, or
        # through _checkin_failed when the reset was cancelled.
        above = caller.f_back
        if above is not None and above.f_code.co_name == "_checkin_failed":
            above = above.f_back
        if above is not None and above.f_code is _FINALIZE_FAIRY:
            return RESET_FAILED_CLOSE
        return INVALIDATED_CLOSE
    return _BY_CALLER.get(name, OTHER_CLOSE)


def _past_recycle(record: Any) -> bool:
    pool = getattr(record, "_ConnectionRecord__pool", None)
    recycle = getattr(pool, "_recycle", -1)
    started = getattr(record, "starttime", None)
    return recycle > -1 and started is not None and time.time() - started > recycle


def detached_close_reason() -> str:
    """Why a detached connection is being closed; called from inside `close_detached`: the
    garbage collector's cleanup of a connection the application dropped (an async one), or
    the application closing one it detached."""
    finalizing = _up(sys._getframe(1), _FINALIZE_FAIRY)
    if finalizing is not None and finalizing.f_locals.get("is_gc_cleanup") is True:
        return GC_CLOSE
    return DETACHED_CLOSE
