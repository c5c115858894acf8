"""An ASGI app (for `uvicorn --workers N`) with an instrumented async engine on PostgreSQL.

GET /query?sleep=S holds one pooled connection for S seconds; GET /pid only names the worker.
Both answer with the worker's pid. A query is counted by served.py once it is done.
"""

import os
from urllib.parse import parse_qs

from served import served
from sqlalchemy.ext.asyncio import create_async_engine

from pool_exporter import instrument

engine = create_async_engine(
    os.environ["APP_DATABASE_URL"],
    pool_size=2,
    max_overflow=1,
    connect_args={"application_name": os.environ.get("APP_NAME", "pool-exporter-test-app")},
)
instrument(engine, name="app")


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await engine.dispose()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["path"] == "/query":
        query = parse_qs(scope.get("query_string", b"").decode())
        sleep = float(query.get("sleep", ["0"])[0])
        async with engine.connect() as conn:
            await conn.exec_driver_sql("SELECT pg_sleep(%s)", (sleep,))
        served()
    body = str(os.getpid()).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})  # fmt: skip
    await send({"type": "http.response.body", "body": body})
