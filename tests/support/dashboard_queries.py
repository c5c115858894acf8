"""Every PromQL query a generated dashboard holds, for tests that run them against a Prometheus."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any


def _walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _walk_panels(panel.get("panels", []))


def queries(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, expr) for every panel target, variable and annotation query of a dashboard."""
    for panel in _walk_panels(data["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in data["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["query"]
    for annotation in data["annotations"]["list"]:
        if "expr" in annotation:
            yield f"annotation {annotation['name']!r}", annotation["expr"]


_LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.*),\s*(?P<label>\w+)\)$")


def label_values(query: str) -> tuple[str, str]:
    """(selector, label) of a `label_values(selector, label)` variable query."""
    match = _LABEL_VALUES.match(query)
    if match is None:
        raise ValueError(f"not a label_values(selector, label) query: {query!r}")
    return match["selector"], match["label"]


def as_promql(where: str, query: str) -> str:
    """The query Prometheus can answer: a variable's `label_values(selector, label)` becomes
    the series of the selector grouped by the label, as Grafana does."""
    if where.startswith("variable"):
        selector, label = label_values(query)
        return f"group by ({label}) ({selector})"
    return query
