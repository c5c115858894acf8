"""A WSGI app (for gunicorn, uWSGI) with an instrumented engine on the test PostgreSQL.

GET /query?sleep=S holds one pooled connection for S seconds in the database; GET /hold?sleep=S
holds one for S seconds in Python (time.sleep, which gevent makes cooperative); GET /pid only
names the worker. All answer with the worker's pid. A request that checked a connection out is
counted by served.py once it is done. APP_LONG_CHECKOUT_THRESHOLD sets long_checkout_threshold.
"""

import os
import time
from urllib.parse import parse_qs

import sqlalchemy as sa
from served import served

from pool_exporter import instrument

engine = sa.create_engine(
    os.environ["APP_DATABASE_URL"],
    pool_size=2,
    max_overflow=1,
    connect_args={"application_name": os.environ.get("APP_NAME", "pool-exporter-test-app")},
)
threshold = os.environ.get("APP_LONG_CHECKOUT_THRESHOLD")
instrument(
    engine,
    name="app",
    dispose_on_fork=True,
    long_checkout_threshold=float(threshold) if threshold else None,
)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path in ("/query", "/hold"):
        sleep = float(parse_qs(environ.get("QUERY_STRING", "")).get("sleep", ["0"])[0])
        with engine.connect() as conn:
            if path == "/query":
                conn.exec_driver_sql("SELECT pg_sleep(%s)", (sleep,))
            else:
                conn.exec_driver_sql("SELECT 1")
                time.sleep(sleep)
        served()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
