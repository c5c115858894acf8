"""A replay's result in the words of the incident report."""

from __future__ import annotations

from pool_exporter.incident.results import Result


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


# What each layer's line says it measured.
LAYER_NAMES = {"pool": "pool wait", "pooler": "pooler wait", "database": "database"}


def _layers(r: Result) -> list[str]:
    """Where the time went, a line a layer measured (none for a result written before)."""
    if not r.layers:
        return []
    lines = [f"where the time went in the {r.ok} ok requests:"]
    for name, times in r.layers.items():
        lines.append(
            f"  {LAYER_NAMES.get(name, name):<14}p50 {times['p50']:.2f} s, p99 "
            f"{times['p99']:.2f} s, longest {times['max']:.2f} s, {times['total']:.1f} s in all"
        )
    return lines


def summary(r: Result) -> list[str]:
    """What happened, in the words of the incident report."""
    s = r.settings
    lines = [
        f"pool {r.pool!r} on {r.database}: pool_size {s['pool_size']}, max_overflow "
        f"{s['max_overflow']}, pool_timeout {s['pool_timeout']:g} s",
        f"requests        {r.requests} ({r.ok} ok, {r.timeouts} timed out, {r.errors} errors"
        + (f", {r.cancelled} cut short" if r.cancelled else "")
        + (f", {r.not_started} never sent" if r.not_started else "")
        + ")",
        f"push            {r.scenario['users']} users over {r.scenario['ramp']:g} s "
        f"starting at {r.push_at:g} s",
        f"saturated       {_secs(r.time_to_saturation)} after the push started "
        f"(peak {r.peak_in_use} of {s['pool_size'] + s['max_overflow']} in use, "
        f"{r.peak_waiting} callers waiting)",
        f"longest wait    {r.longest_wait:.2f} s for a connection that came"
        + (f"; wait p50 {r.wait['p50']:.2f} s, p99 {r.wait['p99']:.2f} s" if r.wait else ""),
        f"timeouts        {r.timeouts}"
        + (f", the first {_secs(r.first_timeout)} after the push started" if r.timeouts else ""),
    ]
    lines += _layers(r)
    if r.max_start_lag > 0.5:
        lines.append(
            f"note            requests started up to {r.max_start_lag:.1f} s late: the "
            "thread pool, not the connection pool, was the limit"
        )
    if r.interrupted:
        lines.append(f"interrupted     after {r.elapsed:.1f} s; these are the numbers so far")
    return lines
