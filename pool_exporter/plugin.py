"""The zero-code route: `create_engine(url, plugins=["pool_exporter"])`.

SQLAlchemy finds this class through the `sqlalchemy.plugins` entry point. The pool's name can
be given as `?pool_exporter_name=quiz` in the URL or `pool_exporter_name="quiz"` as a
create_engine() argument; the plugin removes it before the dialect sees it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import URL, Engine
from sqlalchemy.engine.interfaces import CreateEnginePlugin

from .instrument import instrument

NAME_ARG = "pool_exporter_name"


class PoolExporterPlugin(CreateEnginePlugin):
    def __init__(self, url: URL, kwargs: dict[str, Any]) -> None:
        super().__init__(url, kwargs)
        self.name: str | None = kwargs.pop(NAME_ARG, None) or url.query.get(NAME_ARG)  # type: ignore[assignment]

    def update_url(self, url: URL) -> URL:
        return url.difference_update_query([NAME_ARG])

    def engine_created(self, engine: Engine) -> None:
        instrument(engine, name=self.name)
