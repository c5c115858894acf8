"""A replay's results: `Result`, its per-second `Sample`s and their JSON form (SCHEMA).

Apart from the runner, so that what reads results (advise, the live view, the timeline)
needs neither SQLAlchemy nor threads to do so.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, TypeAlias

from pool_exporter.incident.percentiles import percentiles

SCHEMA = "pool-exporter/replay/1"

# Where the time went, per layer ("pool", "pooler", "database"): p50, p99, max and total, s.
Layers: TypeAlias = dict[str, dict[str, float]]


def layer(times: list[float]) -> dict[str, float]:
    """One layer's times as a result keeps them: median, p99, longest and total seconds."""
    p = percentiles(times)
    return {
        "p50": round(p["p50"], 4),
        "p99": round(p["p99"], 4),
        "max": round(p["max"], 4),
        "total": round(math.fsum(times), 4),
    }


@dataclass
class Sample:
    """The pool once per sample interval; waits are of checkouts that ended in the interval
    (a timed-out checkout counts with the time it waited)."""

    t: float
    in_use: int
    idle: int
    waiting: int
    capacity: int
    checkouts: int
    timeouts: int
    arrived: int
    finished: int
    wait_p50: float
    wait_p95: float
    wait_p99: float
    wait_max: float


@dataclass
class Result:
    """What a replay measured; `to_json()` is the machine-readable form (SCHEMA)."""

    database: str
    pool: str
    settings: dict[str, Any]
    scenario: dict[str, Any]
    started_at: float  # unix time of t = 0
    push_at: float  # seconds from start
    elapsed: float = 0.0
    requests: int = 0
    ok: int = 0
    timeouts: int = 0
    errors: int = 0
    cancelled: int = 0
    not_started: int = 0
    interrupted: bool = False
    time_to_saturation: float | None = None  # seconds from the push's start
    first_timeout: float | None = None  # seconds from the push's start
    longest_wait: float = 0.0  # of a checkout that succeeded
    wait: dict[str, float] = field(default_factory=dict)  # percentiles over all requests
    hold: dict[str, float] = field(default_factory=dict)  # measured, successful requests
    # the same holds as a Prometheus histogram would count them: [le, cumulative count] at
    # the exporter's hold buckets (results written before it had this: empty)
    hold_buckets: list[list[float]] = field(default_factory=list)
    peak_in_use: int = 0
    peak_waiting: int = 0
    arrival_rate: float = 0.0  # the push's users per second
    max_start_lag: float = 0.0  # how late the latest request started (thread pool too small)
    # how much longer than planned the successful requests held their connections, on
    # average (s): the replay's own query, and a busy machine's late wake-ups
    hold_overhead: float = 0.0
    # Where the successful requests' time went (Layers): the wait for the app pool's
    # connection, the wait in the pooler (only through one: the transaction's first statement,
    # one round trip included) and the database's time (the rest of the hold). Results written
    # before it had this: empty.
    layers: Layers = field(default_factory=dict)
    error_types: dict[str, int] = field(default_factory=dict)
    timeline: list[Sample] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        if data.get("schema") != SCHEMA:
            raise ValueError(f"not a replay result (schema {data.get('schema')!r}, want {SCHEMA})")
        # Fields a later version added are left out, and fields it lacks take their defaults
        # (the hold histogram came after the first results): the schema names the meaning
        # of the fields both know, which stays the same.
        known = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in data.items() if k in known}
        sample = {f.name for f in dataclasses.fields(Sample)}
        fields["timeline"] = [
            Sample(**{k: v for k, v in s.items() if k in sample})
            for s in fields.get("timeline", [])
        ]
        return cls(**fields)
