"""Grafana's side of the dashboard, nothing about pools: grafanalib 0.7.1's panels brought to
the shape Grafana 10/11 write for schema 39.

grafanalib writes an old dashboard shape (schema 12, legacy panel keys, a target format from
Grafana 5). Panels are built with grafanalib and the result is brought to schema 39:
datasource references as objects on every panel and target, the new heatmap panel,
`showLegend` on legends, no keys that schema dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import attr
from grafanalib import core as g
from grafanalib._gen import DashboardEncoder

SCHEMA_VERSION = 39  # Grafana 10.3/10.4; 11.x migrates it forward without changes to panels
PLUGIN_VERSION = "10.4.0"
DATASOURCE_VARIABLE = "datasource"
DATASOURCE: dict[str, str] = {"type": "prometheus", "uid": "${" + DATASOURCE_VARIABLE + "}"}
GRAFANA_DATASOURCE: dict[str, str] = {"type": "grafana", "uid": "-- Grafana --"}
ALL_VALUE = ".*"  # so "All" also matches series without the label (single-process: no worker)

Row = tuple[str, list[tuple[g.Panel, int, int]]]  # title, (panel, width, height)


# -- panels ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Query:
    """A Prometheus query of a panel, in the target shape Grafana 10/11 write."""

    expr: str
    legend: str = "__auto"
    heatmap: bool = False
    instant: bool = False
    # Ask Prometheus for the exemplars of the series the query reads too: the panel then
    # marks them, each linking to its trace where the data source links `trace_id`.
    exemplar: bool = False

    def target(self, ref_id: str) -> dict[str, Any]:
        target = {
            "datasource": DATASOURCE,
            "editorMode": "code",
            "expr": self.expr,
            "format": "heatmap" if self.heatmap else "time_series",
            "instant": self.instant,
            "legendFormat": self.legend,
            "range": not self.instant,
            "refId": ref_id,
        }
        if self.exemplar:
            target["exemplar"] = True
        return target


def targets(queries: Sequence[Query]) -> list[dict[str, Any]]:
    return [q.target(chr(ord("A") + i)) for i, q in enumerate(queries)]


def steps(warning: float | None = None, critical: float | None = None) -> list[dict[str, Any]]:
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    if warning is not None:
        steps.append({"color": "orange", "value": warning})
    if critical is not None:
        steps.append({"color": "red", "value": critical})
    return steps


def override(regex: str, color: str, *, dashed: bool = False) -> dict[str, Any]:
    properties: list[dict[str, Any]] = [
        {"id": "color", "value": {"fixedColor": color, "mode": "fixed"}}
    ]
    if dashed:
        properties.append({"id": "custom.lineStyle", "value": {"dash": [10, 10], "fill": "dash"}})
        properties.append({"id": "custom.fillOpacity", "value": 0})
        properties.append({"id": "custom.stacking", "value": {"group": "A", "mode": "none"}})
    return {"matcher": {"id": "byRegexp", "options": regex}, "properties": properties}


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Query],
    *,
    bands: list[dict[str, Any]] | None = None,
    threshold_style: str = "off",
    overrides: Sequence[dict[str, Any]] = (),
    stacked: bool = False,
    max_value: int | None = None,
) -> g.TimeSeries:
    return g.TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets(queries),
        unit=unit,
        thresholds=bands or steps(),
        thresholdsStyleMode=threshold_style,
        overrides=list(overrides),
        stacking={"group": "A", "mode": "normal" if stacked else "none"},
        fillOpacity=20 if stacked else 10,
        valueMin=0,
        valueMax=max_value,
        legendDisplayMode="table",
        legendPlacement="right" if len(queries) > 2 else "bottom",
        legendCalcs=["lastNotNull", "max"],
        tooltipMode="multi",
        tooltipSort="desc",
        showPoints="never",
    )


@attr.s
class CheckoutHeatmap(g.Panel):  # type: ignore[misc]
    """The heatmap panel of Grafana 9.1+ (grafanalib's `Heatmap` is the old Angular one)."""

    unit: str = attr.ib(default="s")

    def to_json_data(self) -> dict[str, Any]:
        return self.panel_json(  # type: ignore[no-any-return]
            {
                "fieldConfig": {
                    "defaults": {
                        "custom": {
                            "hideFrom": {"legend": False, "tooltip": False, "viz": False},
                            "scaleDistribution": {"type": "linear"},
                        },
                        "unit": self.unit,
                    },
                    "overrides": [],
                },
                "options": {
                    "calculate": False,  # Prometheus already bucketed the data (format=heatmap)
                    "cellGap": 1,
                    "color": {
                        "exponent": 0.5,
                        "fill": "dark-orange",
                        "mode": "scheme",
                        "reverse": False,
                        "scale": "exponential",
                        "scheme": "Oranges",
                        "steps": 64,
                    },
                    "exemplars": {"color": "rgba(255,0,255,0.7)"},
                    "filterValues": {"le": 1e-9},
                    "legend": {"show": True},
                    "rowsFrame": {"layout": "auto"},
                    "tooltip": {"mode": "single", "showColorScale": False, "yHistogram": True},
                    "yAxis": {"axisPlacement": "left", "reverse": False, "unit": self.unit},
                    "showValue": "never",
                },
                "pluginVersion": PLUGIN_VERSION,
                "type": "heatmap",
            }
        )


def heatmap(title: str, description: str, query: Query) -> CheckoutHeatmap:
    # grafanalib's attributes are invisible to mypy's attrs plugin (the package is untyped).
    kwargs: dict[str, Any] = {
        "title": title,
        "description": description,
        "dataSource": DATASOURCE,
        "targets": targets([query]),
    }
    return CheckoutHeatmap(**kwargs)


def stat(
    title: str, description: str, unit: str, query: Query, bands: list[dict[str, Any]]
) -> g.Stat:
    return g.Stat(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=targets([query]),
        format=unit,
        thresholds=bands,
        reduceCalc="lastNotNull",
        colorMode="background",
        graphMode="none",
        noValue="no data",
    )


# -- variables and layout -------------------------------------------------------------------


def query_variable(name: str, label: str, query: str, *, include_all: bool = True) -> g.Template:
    """A `label_values` variable; with `include_all`, several values or All (`.*`)."""
    return g.Template(
        name=name,
        label=label,
        query=query,
        dataSource=DATASOURCE,
        includeAll=include_all,
        multi=include_all,
        allValue=ALL_VALUE if include_all else None,
        refresh=g.REFRESH_ON_TIME_RANGE_CHANGE,
        sort=g.SORT_ALPHA_IGNORE_CASE_ASC,
    )


def datasource_variable() -> g.Template:
    """Any Prometheus datasource, the default one first: the dashboard needs no uid."""
    return g.Template(
        name=DATASOURCE_VARIABLE, label="Data source", query="prometheus", type="datasource"
    )


def layout(rows: Sequence[Row]) -> list[g.Panel]:
    """Rows of panels, left to right, wrapping at Grafana's 24 columns."""
    panels: list[g.Panel] = []
    y = 0
    for title, items in rows:
        panels.append(g.RowPanel(title=title, gridPos=g.GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        x, line_height = 0, 0
        for panel, w, h in items:
            if x + w > 24:
                y, x, line_height = y + line_height, 0, 0
            panel.gridPos = g.GridPos(h=h, w=w, x=x, y=y)
            x += w
            line_height = max(line_height, h)
        y += line_height
        panels.extend(p for p, _, _ in items)
    return panels


# -- schema 39 --------------------------------------------------------------------------------

# Keys grafanalib writes that schema 39 no longer has (or that only mean something in the
# Angular panels), dropped so the JSON is what Grafana itself would save.
_DROP_DASHBOARD = ("__inputs", "rows", "hideControls", "sharedCrosshair", "style", "gnetId")
_DROP_PANEL = (
    "cacheTimeout",
    "editable",
    "error",
    "height",
    "hideTimeOverride",
    "minSpan",
    "span",
    "maxPerRow",
    "repeatDirection",
    "maxDataPoints",  # grafanalib's 100 would coarsen every graph; Grafana uses the width
)
_DROP_PANEL_IF_EMPTY = ("repeat", "timeFrom", "timeShift", "interval")
_ROW_KEYS = ("collapsed", "gridPos", "id", "panels", "title", "type")
_DROP_VARIABLE = ("useTags", "tagsQuery", "tagValuesQuery", "auto", "auto_min", "auto_count")


def to_json_data(dashboard: g.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana 10/11 import it."""
    data: dict[str, Any] = json.loads(json.dumps(dashboard, cls=DashboardEncoder))
    for key in _DROP_DASHBOARD:
        data.pop(key, None)
    data.update(
        fiscalYearStartMonth=0,
        liveNow=False,
        weekStart="",
        timepicker={"refresh_intervals": ["10s", "30s", "1m", "5m", "15m", "1h"]},
    )
    for panel in walk_panels(data["panels"]):
        _tidy_panel(panel)
    for variable in data["templating"]["list"]:
        _tidy_variable(variable)
    return data


def walk_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def _tidy_panel(panel: dict[str, Any]) -> None:
    for key in _DROP_PANEL:
        panel.pop(key, None)
    for key in _DROP_PANEL_IF_EMPTY:
        if not panel.get(key):
            panel.pop(key, None)
    if panel["type"] == "row":
        for key in set(panel) - set(_ROW_KEYS):
            del panel[key]
        return
    panel.setdefault("pluginVersion", PLUGIN_VERSION)
    legend = panel.get("options", {}).get("legend")
    if isinstance(legend, dict) and "displayMode" in legend:
        legend["showLegend"] = legend["displayMode"] != "hidden"  # schema 37
    defaults = panel["fieldConfig"]["defaults"]
    if not defaults.get("thresholds", {}).get("steps"):
        defaults["thresholds"] = {"mode": "absolute", "steps": steps()}
    for key in ("min", "max", "decimals"):
        if defaults.get(key) is None:
            defaults.pop(key, None)
    custom = defaults.get("custom", {})
    for key in ("axisSoftMin", "axisSoftMax"):
        if custom.get(key) is None:
            custom.pop(key, None)
    scale = custom.get("scaleDistribution", {})
    if scale.get("type") == "linear":
        scale.pop("log", None)
    if defaults.get("color") is None:
        defaults["color"] = {"mode": "thresholds"}


def _tidy_variable(variable: dict[str, Any]) -> None:
    for key in _DROP_VARIABLE:
        variable.pop(key, None)
    variable["current"] = {}  # Grafana picks the first option (or All) on load
    variable["skipUrlSync"] = False
    if variable["type"] == "datasource":
        for key in ("datasource", "allValue", "tags"):
            variable.pop(key, None)
        variable["regex"] = ""
        return
    variable["definition"] = variable["query"]
    variable["regex"] = ""


def render(data: dict[str, Any]) -> str:
    """The committed text: sorted keys, two-space indent, one trailing newline."""
    return json.dumps(data, sort_keys=True, indent=2) + "\n"
