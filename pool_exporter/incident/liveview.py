"""The demo's live terminal view: redrawn in place on a terminal, a line now and then in a log."""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import TextIO

from .results import Result, Sample

BAR = 30


def bar(fraction: float, width: int = BAR) -> str:
    filled = max(0, min(width, round(fraction * width)))
    return "#" * filled + "." * (width - filled)


class LiveView:
    """Draws one frame per sample. On a TTY the frame replaces the previous one (ANSI cursor
    movement, no curses, so it works in any terminal and leaves the scrollback readable);
    elsewhere a single line every `every` seconds, so a CI log stays short."""

    def __init__(
        self,
        *,
        total: float,
        push_at: float,
        alerts: Callable[[], list[str]] = list,
        out: TextIO | None = None,
        every: float = 5.0,
    ) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.total = total
        self.push_at = push_at
        self.alerts = alerts
        self.every = every
        self._lines = 0
        self._last_line = -every
        self._lock = threading.Lock()

    def __call__(self, sample: Sample, result: Result) -> None:
        with self._lock:
            if self.tty:
                self._redraw(self.frame(sample, result))
            elif sample.t - self._last_line >= self.every:
                self._last_line = sample.t
                print(self.line(sample), file=self.out, flush=True)

    def frame(self, s: Sample, r: Result) -> list[str]:
        util = s.in_use / s.capacity if s.capacity else 0.0
        phase = "steady traffic" if s.t < self.push_at else "push"
        progress = min(1.0, s.t / self.total) if self.total else 1.0
        lines = [
            f"pool-exporter demo  t={s.t:5.1f} s  ({phase}; push of {r.scenario['users']} users "
            f"at {self.push_at:g} s)",
            f"  in use    [{bar(util)}] {s.in_use:3d}/{s.capacity} ({util:4.0%})  idle {s.idle}",
            f"  waiting   {s.waiting:5d} callers    wait p99 {s.wait_p99:6.2f} s  "
            f"(max {s.wait_max:.2f} s, last second)",
            f"  requests  {s.checkouts} ok   {s.timeouts} timed out   {s.arrived} sent",
        ]
        fired = self.alerts()
        lines.append("  alerts    " + (", ".join(fired) if fired else "none firing"))
        lines.append(f"  progress  [{bar(progress)}] {progress:4.0%}   Ctrl-C stops")
        return lines

    def line(self, s: Sample) -> str:
        fired = self.alerts()
        return (
            f"t={s.t:5.1f}s in_use={s.in_use}/{s.capacity} waiting={s.waiting} "
            f"wait_p99={s.wait_p99:.2f}s ok={s.checkouts} timeouts={s.timeouts} "
            f"sent={s.arrived}" + (f" alerts={','.join(fired)}" if fired else "")
        )

    def _redraw(self, lines: list[str]) -> None:
        up = f"\x1b[{self._lines}F" if self._lines else ""
        # \x1b[K clears what a longer previous frame left on each line
        self.out.write(up + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        self.out.flush()
        self._lines = len(lines)
