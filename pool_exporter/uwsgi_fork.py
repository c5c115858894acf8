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
import types
from collections.abc import Callable
from typing import Any

from . import fork

log = logging.getLogger("pool_exporter")

HOOK = "post_fork_hook"


def follow_uwsgi() -> None:
    """Under uWSGI (its `uwsgi` module importable only there), put the reset into
    `uwsgi.post_fork_hook`, unless it is there already. Never raises: the application's
    start does not break over this."""
    try:
        uwsgi = importlib.import_module("uwsgi")
    except ImportError:
        return
    try:
        if not isinstance(uwsgi, _HookGuard):
            _guard(uwsgi)
    except Exception:
        log.exception("pool-exporter could not add its reset to uwsgi.post_fork_hook")


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
        _reset_if_forked()
        return hook() if hook is not None else None

    post_fork_hook.pool_exporter_reset = True  # type: ignore[attr-defined]
    post_fork_hook.__wrapped__ = hook  # type: ignore[attr-defined]
    return post_fork_hook


def _reset_if_forked() -> None:
    try:
        fork.reset_if_forked()
    except Exception:  # the worker serves on; its numbers may be its parent's
        log.exception("pool-exporter could not reset a forked child's numbers")
