"""A registry's exposition parsed back with prometheus-client's parser: every sample, or one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

Key = tuple[str, tuple[tuple[str, str], ...]]


def scrape(registry: CollectorRegistry) -> dict[Key, float]:
    """Every sample of the registry's exposition, by name and sorted labels."""
    text = generate_latest(registry).decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    """One sample's value from the parsed exposition; fails if the series does not exist."""
    key = (name, tuple(sorted(labels.items())))
    samples = scrape(registry)
    assert key in samples, (
        f"no series {name}{labels}; have {sorted(k for k in samples if k[0] == name)}"
    )
    return samples[key]
