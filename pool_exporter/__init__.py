"""pool-exporter: Prometheus metrics for SQLAlchemy connection pools."""

from .checkouts import BorrowSite, Checkout
from .checkouts_app import make_checkouts_wsgi_app
from .events import mark_event
from .exposition import make_asgi_app, make_wsgi_app, start_http_server
from .instrument import PoolInstrumentation, current_checkouts, default_name, instrument
from .metrics import ALL as METRICS

__all__ = [
    "METRICS",
    "BorrowSite",
    "Checkout",
    "PoolInstrumentation",
    "current_checkouts",
    "default_name",
    "instrument",
    "make_asgi_app",
    "make_checkouts_wsgi_app",
    "make_wsgi_app",
    "mark_event",
    "start_http_server",
]
