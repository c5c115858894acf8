"""`?name[]=` filtering that reaches every family a collector yields, not only declared ones."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector


class NameFilter:
    """A collector as prometheus-client's WSGI and ASGI apps see it, with a `?name[]=` filter that
    reaches every family. prometheus-client's own filter finds a collector by the names it
    declared when registered, and neither the merged workers' `sqlalchemy_*` families (known
    only at scrape time) nor ProcessCollector declare theirs."""

    def __init__(self, source: Collector) -> None:
        self.source = source

    def collect(self) -> Iterable[Metric]:
        return self.source.collect()

    def restricted_registry(self, names: Iterable[str]) -> Only:
        return Only(self.source, frozenset(names))


class Only:
    """The samples whose name, or whose family's name, was asked for."""

    def __init__(self, source: Collector, names: frozenset[str]) -> None:
        self.source = source
        self.names = names

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            whole = family.name in self.names
            samples = [s for s in family.samples if whole or s.name in self.names]
            if samples:
                kept = Metric(family.name, family.documentation, family.type, family.unit)
                kept.samples = samples
                yield kept
