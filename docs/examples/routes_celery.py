"""instrument(engine, route=...) in a Celery worker: each checkout is counted under the name
of the task that made it ("shop.send_push")."""

from __future__ import annotations

import sqlalchemy as sa
from celery import Celery, current_task
from prometheus_client import REGISTRY, CollectorRegistry

import pool_exporter


def celery_route() -> str | None:
    """The name of the task being run; None outside a task."""
    task = current_task
    return task.name if task else None


def create_app(
    database_url: str, registry: CollectorRegistry = REGISTRY, **config: object
) -> tuple[Celery, sa.Engine]:
    engine = sa.create_engine(database_url, pool_size=5, max_overflow=10)
    pool_exporter.instrument(engine, name="shop", route=celery_route, registry=registry)
    app = Celery("shop", **config)

    @app.task(name="shop.send_push")
    def send_push(user_id: int) -> int:
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        return user_id

    return app, engine
