"""The demo's PNG: the pool through the burst, with the moments that matter marked."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass
from pathlib import Path

from pool_exporter.errors import MissingExtra

from .replay import Result


@dataclass(frozen=True)
class Marker:
    """A moment on the timeline: an alert firing, the push, the first timeout."""

    t: float  # seconds from the start of the run
    label: str
    color: str = "tab:gray"


def can_plot() -> bool:
    """Whether matplotlib (the `demo` extra) is installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(result: Result, out: Path, markers: list[Marker]) -> Path:
    """Write the timeline PNG; matplotlib's Agg backend, so no display is needed."""
    if not can_plot():
        raise MissingExtra("the timeline PNG", "matplotlib", "demo")
    import matplotlib

    # The CLI logs at INFO; matplotlib's notes (building its font cache on a first run) are not
    # the demo's business.
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = result.timeline
    t = [s.t for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True, constrained_layout=True)
    ax_use, ax_wait_n, ax_wait, ax_to = axes
    settings = result.settings

    ax_use.plot(t, [s.in_use for s in samples], label="in use", color="tab:blue")
    ax_use.plot(t, [s.capacity for s in samples], "--", label="capacity (size + overflow)",
                color="black")  # fmt: skip
    ax_use.axhline(settings["pool_size"], ls=":", color="gray", label="pool_size")
    ax_use.set_ylabel("connections")
    ax_use.set_ylim(0, max(s.capacity for s in samples) * 1.15 if samples else 1)

    ax_wait_n.plot(t, [s.waiting for s in samples], color="tab:orange")
    ax_wait_n.set_ylabel("callers waiting")

    for name, color in (("p50", "tab:green"), ("p95", "tab:olive"), ("p99", "tab:red")):
        ax_wait.plot(t, [getattr(s, f"wait_{name}") for s in samples], label=f"wait {name}",
                     color=color)  # fmt: skip
    ax_wait.axhline(settings["pool_timeout"], ls="--", color="black", label="pool_timeout")
    ax_wait.set_ylabel("checkout wait (s)")

    per_second = [0] + [b.timeouts - a.timeouts for a, b in itertools.pairwise(samples)]
    width = 0.8 * min((b - a for a, b in itertools.pairwise(t)), default=1.0)
    ax_to.bar(
        t, per_second, width=-width, align="edge", color="tab:red", label="timeouts per sample"
    )
    ax_to.set_ylabel("pool timeouts")
    ax_to.set_xlabel("seconds since start")

    for marker in markers:
        for ax in axes:
            ax.axvline(marker.t, color=marker.color, ls="-.", lw=1.2)
        ax_use.annotate(
            marker.label,
            (marker.t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -3),
            textcoords="offset points",
            rotation=90,
            va="top",
            fontsize=8,
            color=marker.color,
        )
    for ax in (ax_use, ax_wait, ax_to):
        ax.legend(loc="upper right", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{result.scenario['users']} users over {result.scenario['ramp']:g} s against pool_size "
        f"{settings['pool_size']} + max_overflow {settings['max_overflow']}, "
        f"pool_timeout {settings['pool_timeout']:g} s: {result.timeouts} timeouts"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return out
