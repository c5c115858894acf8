"""What a test counts itself on a real pool, beside what the exporter reports: the closes its
own listeners saw, and the exporter's closes by reason and waits by outcome, parsed from the
registry's exposition."""

from __future__ import annotations

import threading
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry

from pool_exporter import metrics as m
from tests.support.exposition import scrape


class CloseCount:
    """Every `close` and `close_detached` event of an engine's pools, counted by listeners of
    the test's own (nothing of pool-exporter's): the number a close counter must equal."""

    def __init__(self, engine: Any) -> None:
        self.engine: sa.Engine = getattr(engine, "sync_engine", engine)
        self.total = 0
        self._lock = threading.Lock()
        sa.event.listen(self.engine, "close", self._pooled)
        sa.event.listen(self.engine, "close_detached", self._detached)

    def _pooled(self, dbapi_connection: Any, record: Any) -> None:
        with self._lock:
            self.total += 1

    def _detached(self, dbapi_connection: Any) -> None:
        with self._lock:
            self.total += 1


def by_label(registry: CollectorRegistry, sample: str, pool: str, label: str) -> dict[str, float]:
    """The values of `sample` for `pool`, by the value of `label`."""
    return {
        dict(labels)[label]: v
        for (name, labels), v in scrape(registry).items()
        if name == sample and dict(labels).get("pool") == pool
    }


def closes_by_reason(registry: CollectorRegistry, pool: str) -> dict[str, float]:
    """`sqlalchemy_pool_closes_total` of `pool` by reason: every reason, 0 included."""
    found = by_label(registry, m.CLOSES.sample, pool, "reason")
    assert set(found) == set(m.CLOSE_REASONS), found
    return found


def waits(registry: CollectorRegistry, pool: str, suffix: str = "_count") -> dict[str, float]:
    """The wait histogram's `suffix` sample of `pool` by outcome: every outcome, 0 included."""
    found = by_label(registry, m.CHECKOUT_WAIT.name + suffix, pool, "outcome")
    assert set(found) == set(m.OUTCOMES), found
    return found
