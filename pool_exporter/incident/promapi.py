"""A small client for the Prometheus HTTP API: instant queries, nothing else."""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from pool_exporter import redact


class PrometheusError(Exception):
    """The server could not be reached, or did not answer like Prometheus."""


class QueryError(PrometheusError):
    """Prometheus refused the query (bad PromQL, say); the message names the expression."""


class PrometheusAPI:
    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        if not url.startswith(("http://", "https://")):
            raise PrometheusError(f"{redact.url(url)} is not an http(s) URL of a Prometheus server")
        self.url = url.rstrip("/")
        self.shown = redact.url(self.url)  # for messages: no credentials, no query
        self.timeout = timeout

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """What `expr` evaluates to (at unix time `at`, default now), as a list of
        {"metric": labels, "value": [time, "text"]}; a scalar comes back as one such item."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        try:
            data = self.get("/api/v1/query", params)
        except QueryError as exc:
            raise QueryError(f"{expr!r}: {exc}") from None
        if data.get("resultType") in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        result: list[dict[str, Any]] = data["result"]
        return result

    def values(self, expr: str, by: str, at: float | None = None) -> dict[str, float]:
        """{label value of `by`: sample value}, NaN and infinite samples left out."""
        out = {}
        for series in self.query(expr, at):
            value = float(series["value"][1])
            if math.isfinite(value):
                out[series["metric"].get(by, "")] = value
        return out

    def scalar(self, expr: str, at: float | None = None) -> float | None:
        found = [float(s["value"][1]) for s in self.query(expr, at)]
        finite = [v for v in found if math.isfinite(v)]
        return max(finite) if finite else None

    def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """The `data` of a successful API answer."""
        url = f"{self.url}{path}?{urllib.parse.urlencode(params or {})}"
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                body = json.load(exc)
            except ValueError:
                raise PrometheusError(f"{self.shown} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise PrometheusError(f"cannot reach Prometheus at {self.shown}: {reason}") from None
        except ValueError:
            raise PrometheusError(f"{self.shown} did not answer like a Prometheus server") from None
        if not isinstance(body, dict):
            raise PrometheusError(f"{self.shown} did not answer like a Prometheus server")
        if body.get("status") != "success":
            raise QueryError(str(body.get("error", body)))
        data: dict[str, Any] = body["data"]
        return data
