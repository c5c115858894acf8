"""The incident's Flask app, for gunicorn `-k gthread` (tests/support/stack.py starts it).

GET /burst?hold=S checks a connection out of the worker's pool and holds it for S seconds of
database time inside a transaction (`SELECT pg_sleep(S)` between BEGIN and COMMIT), as the
incident's requests did; through PgBouncer in transaction mode the server connection is held
exactly that long. The answer tells the client which way it went:

- 200: served;
- 503 with `pool timeout`: the pool's TimeoutError (its queue was longer than pool_timeout);
- 500: anything else.

The app counts each outcome itself through served.py (`request`, `timeout`, `error`), so the
test can hold its own count against the exporter's. GET /pid only names the worker.

The pool comes from the environment: STACK_DATABASE_URL, STACK_POOL_SIZE, STACK_MAX_OVERFLOW,
STACK_POOL_TIMEOUT, STACK_APP_NAME (the connections' application_name).
"""

import logging
import os

import sqlalchemy as sa
from flask import Flask, request
from served import served

import pool_exporter

engine = sa.create_engine(
    os.environ["STACK_DATABASE_URL"],
    pool_size=int(os.environ["STACK_POOL_SIZE"]),
    max_overflow=int(os.environ["STACK_MAX_OVERFLOW"]),
    pool_timeout=float(os.environ["STACK_POOL_TIMEOUT"]),
    connect_args={
        "application_name": os.environ["STACK_APP_NAME"],
        # PgBouncer 1.18 in transaction mode cannot keep a server-side prepared statement
        # from one transaction to the next: psycopg must never prepare.
        "prepare_threshold": None,
    },
)
pool_exporter.instrument(engine, name="app")  # the one line; multiprocess mode from the env

app = Flask(__name__)
log = logging.getLogger("stack_app")


@app.get("/burst")
def burst() -> tuple[str, int]:
    hold = float(request.args.get("hold", "0"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("SELECT pg_sleep(:hold)"), {"hold": hold})
    except sa.exc.TimeoutError:
        served("timeout")
        return "pool timeout\n", 503
    except Exception as exc:
        # The driver's message names host and port at most; the URL is never logged.
        log.error("request failed: %s: %s", type(exc).__name__, str(exc).split("\n")[0])
        served("error")
        return f"error {type(exc).__name__}\n", 500
    served("request")
    return "ok\n", 200


@app.get("/pid")
def pid() -> str:
    return f"{os.getpid()}\n"
