"""instrument(engine, route=...) in a Flask application: each checkout is counted under the URL
rule of the request that made it ("/orders/<int:order_id>"), never under its path, so one
series stands for every order."""

from __future__ import annotations

import sqlalchemy as sa
from flask import Flask, has_request_context, request
from prometheus_client import REGISTRY, CollectorRegistry

import pool_exporter


def flask_route() -> str | None:
    """The URL rule of the request being served; None outside a request (a CLI command, a
    thread of the application's own)."""
    if has_request_context() and request.url_rule is not None:
        return request.url_rule.rule
    return None


def create_app(database_url: str, registry: CollectorRegistry = REGISTRY) -> Flask:
    engine = sa.create_engine(database_url, pool_size=5, max_overflow=10)
    pool_exporter.instrument(engine, name="shop", route=flask_route, registry=registry)
    app = Flask(__name__)

    @app.get("/orders/<int:order_id>")
    def order(order_id: int) -> dict[str, int]:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return {"order": order_id}

    @app.get("/health")
    def health() -> str:
        return "ok"  # no checkout: no count under any route

    return app
