"""Children forked without Python's fork hooks (uWSGI's workers): found and reset as any child.

uWSGI loads the application in its master by default and forks the workers from C, without
running `os.register_at_fork` handlers (unless `--py-call-uwsgi-fork-hooks`). Unreset, every
worker would keep writing into the master's stats file. uWSGI calls `uwsgi.post_fork_hook` in
each process it forks (workers, their replacements, mules, spoolers), so that is where the
reset runs, before the worker serves anything. The hot path stays free of any pid check.

An application's own post-fork hook keeps working: one set before `instrument()` runs after
the reset, and so does one set afterwards (uwsgidecorators sets its chain when it is first
imported): uWSGI's module is given a class whose `__setattr__` puts the reset in front of
whatever is assigned to `post_fork_hook`. A documented use of a module's `__class__`.
"""

from __future__ import annotations

import importlib
import logging
import os
import types
from collections.abc import Callable
from typing import Any

from . import fork

log = logging.getLogger("pool_exporter")

HOOK = "post_fork_hook"

# The process whose numbers the instrumented pools hold. A child made by os.fork() was reset
# by fork.py's handler and is noted here by ours, registered after it; a child forked from C
# still carries its parent's pid here.
_numbers_of = os.getpid()
_looked_for_uwsgi = False


def _reset_by_python() -> None:
    global _numbers_of
    _numbers_of = os.getpid()


os.register_at_fork(after_in_child=_reset_by_python)


def reset_if_forked() -> None:
    """Reset this process as a forked child if it is not the process its pools' numbers
    belong to: a child forked without Python's fork hooks that has not been reset yet. One
    getpid(); called where it is rare (instrument(), uWSGI's post-fork hook), never per
    checkout. Never raises: a failure is logged and the caller goes on."""
    global _numbers_of
    try:
        pid = os.getpid()
        if pid != _numbers_of:
            _numbers_of = pid
            fork.reset_as_forked_child()
    except Exception:
        log.exception("pool-exporter could not reset a forked child's numbers")


def follow_uwsgi() -> None:
    """Under uWSGI (its `uwsgi` module importable only there), put the reset into
    `uwsgi.post_fork_hook`, once per process; then reset now if this is an unreset child."""
    global _looked_for_uwsgi
    if not _looked_for_uwsgi:
        _looked_for_uwsgi = True
        try:
            uwsgi = importlib.import_module("uwsgi")
        except ImportError:
            pass
        else:
            try:
                _guard(uwsgi)
            except Exception:  # never break the application's start over this
                log.exception("pool-exporter could not add its reset to uwsgi.post_fork_hook")
    reset_if_forked()


def _guard(module: types.ModuleType) -> None:
    try:
        module.__class__ = _HookGuard
    except TypeError:  # the reset still runs, unless a hook assigned later replaces it
        log.warning(
            "pool-exporter cannot follow later assignments to uwsgi.post_fork_hook: a hook "
            "the application sets after instrument() must call "
            "pool_exporter.fork.reset_as_forked_child() first"
        )
    hook = getattr(module, HOOK, None)
    if not getattr(hook, "pool_exporter_reset", False):
        # Whatever hook is there already runs after the reset.
        object.__setattr__(module, HOOK, _after_reset(hook))


class _HookGuard(types.ModuleType):
    """uWSGI's module: a `post_fork_hook` assigned to it runs after the reset of the child."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == HOOK and not getattr(value, "pool_exporter_reset", False):
            value = _after_reset(value)
        super().__setattr__(name, value)


def _after_reset(hook: Callable[[], Any] | None) -> Callable[[], Any]:
    def post_fork_hook() -> Any:
        reset_if_forked()
        return hook() if hook is not None else None

    post_fork_hook.pool_exporter_reset = True  # type: ignore[attr-defined]
    post_fork_hook.__wrapped__ = hook  # type: ignore[attr-defined]
    return post_fork_hook
