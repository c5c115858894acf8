"""A WSGI app (for gunicorn) counting its pool's checkouts by route, on a SQLite file.

GET /orders/N checks a connection out under the route "/orders/{id}"; GET /item/N under the
route "/item/N" itself (a route made from user input, as the cap must survive); GET /pid only
names the worker. APP_DATABASE_URL names the database, APP_MAX_ROUTES sets max_routes.
"""

import os
from contextvars import ContextVar

import sqlalchemy as sa

from pool_exporter import instrument

current: ContextVar[str | None] = ContextVar("route", default=None)
engine = sa.create_engine(os.environ["APP_DATABASE_URL"], pool_size=2, max_overflow=2)
instrument(
    engine,
    name="app",
    dispose_on_fork=True,
    route=current.get,
    max_routes=int(os.environ.get("APP_MAX_ROUTES", "20")),
)


def app(environ, start_response):
    path = environ["PATH_INFO"]
    parts = path.strip("/").split("/")
    if len(parts) == 2 and parts[0] in ("orders", "item"):
        token = current.set("/orders/{id}" if parts[0] == "orders" else path)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("select 1")
        finally:
            current.reset(token)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
