"""A replay's result in the words of the incident report."""

from __future__ import annotations

from pool_exporter.incident.results import Result


def _secs(value: float | None) -> str:
    return "never" if value is None else f"{value:.1f} s"


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
    if r.max_start_lag > 0.5:
        lines.append(
            f"note            requests started up to {r.max_start_lag:.1f} s late: the "
            "thread pool, not the connection pool, was the limit"
        )
    if r.interrupted:
        lines.append(f"interrupted     after {r.elapsed:.1f} s; these are the numbers so far")
    return lines
