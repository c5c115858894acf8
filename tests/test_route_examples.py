"""The route= examples of docs/routes.md run for real: Flask and Starlette serving requests
(Flask's test client; httpx calling the ASGI application), Celery running a task, each checkout
counted under its route template or task name."""

from __future__ import annotations

import asyncio
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from prometheus_client import CollectorRegistry

from pool_exporter import metrics as m
from tests.support.exposition import scrape

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "docs" / "examples"


def example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def checkouts_by_route(registry: CollectorRegistry) -> dict[str, float]:
    return {
        dict(labels)["route"]: v
        for (name, labels), v in scrape(registry).items()
        if name == m.ROUTE_CHECKOUTS.sample and v
    }


def test_the_flask_example_counts_each_request_under_its_url_rule(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    app = example("routes_flask").create_app(sqlite_url, registry)
    client = app.test_client()
    for order_id in (1, 2, 3):
        assert client.get(f"/orders/{order_id}").json == {"order": order_id}
    assert client.get("/health").text == "ok"
    assert checkouts_by_route(registry) == {"/orders/<int:order_id>": 3}


def test_the_starlette_example_counts_each_request_under_its_path_template(
    registry: CollectorRegistry, aiosqlite_url: str
) -> None:
    app = example("routes_starlette").create_app(aiosqlite_url, registry)

    async def requests() -> list[object]:
        # httpx calls the ASGI application as a server would, in this event loop
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop") as client:
            return [(await client.get(f"/orders/{n}")).json() for n in (7, 8)]

    assert asyncio.run(requests()) == [{"order": 7}, {"order": 8}]
    assert checkouts_by_route(registry) == {"/orders/{order_id:int}": 2}


def test_the_celery_example_counts_each_task_under_its_name(
    registry: CollectorRegistry, sqlite_url: str
) -> None:
    module = example("routes_celery")
    app, engine = module.create_app(
        sqlite_url, registry, broker="memory://", backend="cache+memory://"
    )
    app.conf.task_always_eager = True  # run in this process, as a worker runs it
    send_push = app.tasks["shop.send_push"]
    assert [send_push.delay(n).get() for n in range(4)] == [0, 1, 2, 3]
    engine.connect().close()  # outside any task
    assert checkouts_by_route(registry) == {"shop.send_push": 4, m.NO_ROUTE: 1}


@pytest.mark.parametrize("name", ["routes_flask", "routes_starlette", "routes_celery"])
def test_every_example_code_block_of_the_docs_is_in_its_file(name: str) -> None:
    doc = (ROOT / "docs" / "routes.md").read_text()
    section = doc.split(f"(examples/{name}.py)", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert blocks, f"docs/routes.md shows no code of {name}.py"
    source = (EXAMPLES / f"{name}.py").read_text()
    for block in blocks:
        assert block in source, f"docs/routes.md shows code that {name}.py does not have"
