"""Waiting on a real Prometheus for what a test is about to read: a scrape, and the rules
evaluated on it, from a given moment on."""

from __future__ import annotations

import time
from datetime import datetime

from pool_exporter.incident.promserver import PrometheusServer

from .procs import wait_until


def _unix(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp).timestamp()


def wait_for_evaluation(prom: PrometheusServer, timeout: float = 30.0) -> None:
    """Until every target has been scraped since now, and every rule group evaluated after
    that scrape ended. The first such scrape counts: a target that takes most of the interval
    to scrape always has a newer one under way."""
    now = time.time()
    ended: dict[str, float] = {}  # by target: when its first scrape since now ended

    def evaluated() -> bool:
        targets = prom.api.get("/api/v1/targets")["activeTargets"]
        for target in targets:
            started = _unix(target["lastScrape"])
            if started > now:
                ended.setdefault(target["scrapeUrl"], started + target["lastScrapeDuration"])
        groups = prom.api.get("/api/v1/rules")["groups"]
        return (
            bool(targets and groups)
            and len(ended) == len(targets)
            and all(_unix(g["lastEvaluation"]) > max(ended.values()) for g in groups)
        )

    what = "the rules evaluated on a scrape taken from now on"
    wait_until(evaluated, timeout=timeout, what=what)
