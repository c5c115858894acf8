"""A WSGI app (for gunicorn) with an instrumented engine on the test PostgreSQL.

GET /query?sleep=S holds one pooled connection for S seconds; GET /pid only names the worker.
Both answer with the worker's pid.
"""

import os
from urllib.parse import parse_qs

import sqlalchemy as sa

from pool_exporter import instrument

engine = sa.create_engine(
    os.environ["APP_DATABASE_URL"],
    pool_size=2,
    max_overflow=1,
    connect_args={"application_name": os.environ.get("APP_NAME", "pool-exporter-test-app")},
)
instrument(engine, name="app", dispose_on_fork=True)


def app(environ, start_response):
    if environ["PATH_INFO"] == "/query":
        sleep = float(parse_qs(environ.get("QUERY_STRING", "")).get("sleep", ["0"])[0])
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT pg_sleep(%s)", (sleep,))
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
