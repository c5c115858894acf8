"""wsgi_app under uWSGI with a post-fork hook of the application's own, which checks a
connection out in each new worker as a request does (and is counted by served.py the same
way). APP_POSTFORK says how it is set: `raw` assigns uwsgi.post_fork_hook before the engine is
instrumented; `decorator` uses uwsgidecorators' @postfork, first imported after it (its import
replaces uwsgi.post_fork_hook with its own chain)."""

import os

import uwsgi
from served import served

if os.environ["APP_POSTFORK"] == "raw":

    def own_hook() -> None:
        check_out()

    uwsgi.post_fork_hook = own_hook

from wsgi_app import app, engine


def check_out() -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    served("postfork")


if os.environ["APP_POSTFORK"] == "decorator":
    from uwsgidecorators import postfork

    postfork(check_out)

__all__ = ["app"]
