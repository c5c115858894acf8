"""A recommendation in the shape issue 28 gives `advise --json`'s `advice` object, read and
checked, for tests/support/stack.py to apply to the stack."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class AdviceShapeError(ValueError):
    """A recommendation that is not in the shape issue 28 gives `advise --json`."""


@dataclass(frozen=True)
class Recommendation:
    """`{pool_size, max_overflow, pool_timeout, pooler: {default_pool_size, max_client_conn},
    push: {rate}}`: per worker, the pooler (when named; max_client_conn only where needed),
    the push's pace (when it must be paced), as issue 28 has `advise --json` give them."""

    pool_size: int  # per worker
    max_overflow: int
    pool_timeout: float
    pooler_pool_size: int | None = None
    pooler_max_client_conn: int | None = None
    push_rate: float | None = None

    @classmethod
    def from_json(cls, advice: Mapping[str, Any]) -> Recommendation:
        try:
            pooler = advice.get("pooler")
            push = advice.get("push")
            if pooler is not None and not isinstance(pooler, Mapping):
                raise AdviceShapeError(f"pooler is not an object: {pooler!r}")
            if push is not None and not isinstance(push, Mapping):
                raise AdviceShapeError(f"push is not an object: {push!r}")
            return cls(
                _whole(advice, "pool_size", least=1),
                _whole(advice, "max_overflow", least=0),
                _number(advice, "pool_timeout"),
                _whole(pooler, "default_pool_size", least=1) if pooler is not None else None,
                # "and max_client_conn where needed" (issue 28): PgBouncer's stays otherwise
                _whole(pooler, "max_client_conn", least=1)
                if pooler is not None and "max_client_conn" in pooler
                else None,
                _number(push, "rate") if push is not None else None,
            )
        except (KeyError, TypeError) as exc:
            raise AdviceShapeError(f"not a recommendation: {exc}: {dict(advice)!r}") from None


def from_advise(report: list[dict[str, Any]], pool: str) -> Recommendation:
    """The recommendation for `pool` in `advise --json`'s report. For a stack whose PgBouncer
    the sidecar watches: issue 28 has advise size the pooler whenever it measured one, so an
    advice without `pooler` is refused, naming what it gave instead."""
    found = [e["advice"] for e in report if "advice" in e and e["advice"].get("pool") == pool]
    if len(found) != 1:
        raise AdviceShapeError(f"advise --json has {len(found)} advice objects for {pool!r}")
    advice = found[0]
    if not isinstance(advice.get("pooler"), Mapping):
        raise AdviceShapeError(
            "advise --json names no pooler settings ({default_pool_size, max_client_conn}) "
            "although the sidecar watches the stack's PgBouncer (issue 28); it gave: "
            + ", ".join(sorted(advice))
        )
    return Recommendation.from_json(advice)


def _whole(obj: Mapping[str, Any], key: str, *, least: int) -> int:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise AdviceShapeError(f"{key} must be a whole number >= {least}, got {value!r}")
    return value


def _number(obj: Mapping[str, Any], key: str) -> float:
    value = obj[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AdviceShapeError(f"{key} must be a number, got {value!r}")
    if value <= 0:
        raise AdviceShapeError(f"{key} must be above 0, got {value!r}")
    return float(value)
