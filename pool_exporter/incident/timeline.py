"""The demo's PNG: the pool through the burst, with the moments that matter marked."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pool_exporter.errors import MissingExtra

from .results import Result

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

DPI = 90


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


# Moments closer than this share of the time axis share one tag: wide enough for "10-12".
TAG_SPACING = 0.05


def tags(markers: list[Marker], span: float) -> list[tuple[float, str]]:
    """One tag per moment or group of moments, at the group's first: the number (in time
    order) of its marker, or the range of numbers of the markers within `TAG_SPACING` of
    `span` of the group's first, e.g. `(7.0, "2-5")`."""
    groups: list[tuple[float, list[int]]] = []
    for n, marker in enumerate(sorted(markers, key=lambda m: m.t), start=1):
        if groups and marker.t - groups[-1][0] < TAG_SPACING * span:
            groups[-1][1].append(n)
        else:
            groups.append((marker.t, [n]))
    return [(t, f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}-{ns[-1]}") for t, ns in groups]


def _mark(
    axes: Sequence[Axes], markers: list[Marker], span: float
) -> tuple[list[Line2D], list[str]]:
    """A line through every panel per moment and its number above the top panel; the lines
    and names for the figure's key."""
    lines: list[Line2D] = []
    names: list[str] = []
    for n, marker in enumerate(sorted(markers, key=lambda m: m.t), start=1):
        drawn = [ax.axvline(marker.t, color=marker.color, ls="-.", lw=1.2) for ax in axes]
        lines.append(drawn[0])  # the key shows each moment once
        names.append(f"{n}  {marker.t:.1f} s  {marker.label}")
    for t, tag in tags(markers, span):
        axes[0].annotate(
            tag,
            (t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
        )
    return lines, names


def plot(result: Result, out: Path, markers: list[Marker]) -> Path:
    """Write the timeline PNG; matplotlib's Agg backend, so no display is needed."""
    if not can_plot():
        raise MissingExtra("the timeline PNG", "matplotlib", "demo")
    fig = figure(result, markers)  # first: it chooses the Agg backend
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=DPI)
    plt.close(fig)
    return out


def figure(result: Result, markers: list[Marker]) -> Figure:
    """The timeline's figure, open: the caller saves and closes it."""
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

    key = _mark(axes, markers, t[-1] - t[0] if len(t) > 1 else 1.0)
    for ax in (ax_use, ax_wait, ax_to):
        ax.legend(loc="upper right", fontsize=8)
    if markers:
        # The moments' names in a key below the plots, numbered in time order: names written
        # beside their lines would overlap where alerts fire together.
        fig.legend(*key, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(
        f"{result.scenario['users']} users over {result.scenario['ramp']:g} s against pool_size "
        f"{settings['pool_size']} + max_overflow {settings['max_overflow']}, "
        f"pool_timeout {settings['pool_timeout']:g} s: {result.timeouts} timeouts"
    )
    return fig
