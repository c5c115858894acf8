"""instrument(engine, route=...) in a Starlette (or FastAPI) application: each checkout is
counted under the path template of the route that serves the request ("/orders/{order_id}").

Starlette's router finds the route after the middleware runs, and writes it into the request's
scope. A middleware therefore keeps the scope itself where route() can read it at checkout
time: a context variable, which the request's task (and the thread pool that runs a sync
endpoint) sees.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

import sqlalchemy as sa
from prometheus_client import REGISTRY, CollectorRegistry
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

import pool_exporter

_scope: ContextVar[Scope | None] = ContextVar("request_scope", default=None)


class KeepScope:
    """Pure ASGI middleware: the request's scope, for starlette_route()."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = _scope.set(scope)
        try:
            await self.app(scope, receive, send)
        finally:
            _scope.reset(token)


def starlette_route() -> str | None:
    """The path template of the route serving the request; None outside a request."""
    scope = _scope.get()
    route: Any = scope.get("route") if scope is not None else None
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else None


def create_app(database_url: str, registry: CollectorRegistry = REGISTRY) -> Starlette:
    engine = create_async_engine(database_url, pool_size=5, max_overflow=10)
    pool_exporter.instrument(engine, name="shop", route=starlette_route, registry=registry)

    async def order(request: Request) -> JSONResponse:
        async with engine.connect() as conn:
            await conn.execute(sa.text("select 1"))
        return JSONResponse({"order": request.path_params["order_id"]})

    return Starlette(
        routes=[Route("/orders/{order_id:int}", order)],
        middleware=[Middleware(KeepScope)],
    )
