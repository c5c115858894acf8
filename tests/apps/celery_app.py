"""A Celery app (prefork pool) whose task checks a connection out of an instrumented engine on
the test PostgreSQL. The broker is a SQLite file through kombu's SQLAlchemy transport, so no
Redis or RabbitMQ is needed; CELERY_BROKER_DB names that file.

The engine is instrumented at import, in the main worker process, as an app that creates its
engine at module level does: billiard forks the pool's children from it with os.fork(), and
replaces each after --max-tasks-per-child tasks. Each task is counted by served.py once done.
"""

import os

import sqlalchemy as sa
from celery import Celery
from served import served

from pool_exporter import instrument

app = Celery("celery_app", broker=f"sqla+sqlite:///{os.environ['CELERY_BROKER_DB']}")
app.config_from_object("celeryconfig")  # deploy/celeryconfig.py, on PYTHONPATH in the test
app.conf.update(
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)

engine = sa.create_engine(os.environ["APP_DATABASE_URL"], pool_size=2, max_overflow=1)
instrument(engine, name="app", dispose_on_fork=True)


@app.task(name="checkout")
def checkout() -> None:
    with engine.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
    served()
