"""Prometheus durations (`30s`, `1h30m`, `500ms`): the one parser and formatter the package uses."""

from __future__ import annotations

import re

# Prometheus's own grammar (model.ParseDuration): units from largest to smallest, each at most
# once, combined without spaces; `y` is 365 days and `w` 7. A bare `0` is accepted too.
UNITS: dict[str, float] = {
    "y": 365 * 86400,
    "w": 7 * 86400,
    "d": 86400,
    "h": 3600,
    "m": 60,
    "s": 1,
    "ms": 0.001,
}
_PATTERN = re.compile("".join(rf"(?:(?P<{unit}>\d+){unit})?" for unit in UNITS))


def is_duration(value: str) -> bool:
    """Whether Prometheus would accept `value` as a duration."""
    return value == "0" or (bool(value) and _PATTERN.fullmatch(value) is not None)


def seconds(value: str) -> float:
    """A Prometheus duration in seconds; a ValueError naming the text if Prometheus refuses it."""
    if value == "0":
        return 0.0
    match = _PATTERN.fullmatch(value) if value else None
    if match is None:
        raise ValueError(f"{value!r} is not a Prometheus duration like 30s, 15m, 1h30m or 500ms")
    return sum(int(count) * UNITS[unit] for unit, count in match.groupdict().items() if count)


def text(value: float) -> str:
    """Seconds as a Prometheus duration: whole seconds as `Ns`, anything else in milliseconds."""
    if value >= 1 and float(value).is_integer():
        return f"{int(value)}s"
    return f"{round(value * 1000)}ms"
