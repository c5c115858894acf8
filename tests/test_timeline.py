"""The demo's PNG: each series drawn where its values are, every moment marked and named, and
no two texts drawn over each other where alerts fire together."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from pool_exporter.incident.results import Result, Sample
from pool_exporter.incident.timeline import DPI, Marker, figure, plot, tags

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# The demo's moments as a short run saw them: alerts firing together at 8.1 s and 9.1 s, one
# 0.2 s before the first timeout.
MARKERS = [
    Marker(5.0, "push", "tab:purple"),
    Marker(7.2, "first timeout", "tab:red"),
    Marker(7.0, "SQLAlchemyPoolExhausted fired", "darkorange"),
    Marker(8.1, "SQLAlchemyPoolQueueExceedsTimeout fired", "darkred"),
    Marker(8.1, "SQLAlchemyPoolQueueNearTimeout fired", "darkred"),
    Marker(9.1, "SQLAlchemyPoolCheckoutTimeouts fired", "darkred"),
    Marker(9.1, "SQLAlchemyPoolCheckoutWaitNearTimeout fired", "darkred"),
]


def result() -> Result:
    def sample(k: int) -> Sample:
        full = 6 <= k <= 10
        return Sample(
            t=float(k),
            in_use=15 if full else 3,
            idle=0 if full else 2,
            waiting=200 if full else 0,
            capacity=15,
            checkouts=30,
            timeouts=20 * max(0, k - 7) if k <= 10 else 60,
            arrived=30,
            finished=30,
            wait_p50=1.9 if full else 0.0,
            wait_p95=2.0 if full else 0.0,
            wait_p99=2.0 if full else 0.0,
            wait_max=2.0 if full else 0.0,
        )

    return Result(
        database="sqlite://",
        pool="demo",
        settings={"pool_size": 5, "max_overflow": 10, "pool_timeout": 2.0},
        scenario={"users": 400, "ramp": 3.0},
        started_at=0.0,
        push_at=5.0,
        timeouts=60,
        timeline=[sample(k) for k in range(21)],
    )


def test_moments_close_in_time_share_one_tag_numbered_in_time_order() -> None:
    assert tags(MARKERS, span=20.0) == [(5.0, "1"), (7.0, "2-3"), (8.1, "4-5"), (9.1, "6-7")]
    assert tags(MARKERS, span=30.0) == [(5.0, "1"), (7.0, "2-5"), (9.1, "6-7")]
    assert tags(MARKERS, span=200.0) == [(5.0, "1-7")]
    assert tags([], span=20.0) == []


def test_no_two_texts_of_the_timeline_overlap_and_the_key_names_every_moment() -> None:
    import matplotlib.pyplot as plt

    fig = figure(result(), MARKERS)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        # What the timeline writes: tags on the panels, axis labels, legends (tick labels are
        # matplotlib's to place).
        legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes if ax.get_legend())]
        written = [
            *(t for ax in fig.axes for t in ax.texts),
            *(label for ax in fig.axes for label in (ax.xaxis.label, ax.yaxis.label)),
            *(t for legend in legends for t in legend.get_texts()),
        ]
        texts = [t for t in written if t.get_visible() and t.get_text().strip()]
        key = [t.get_text() for t in fig.legends[0].get_texts()]
        boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    finally:
        plt.close(fig)
    assert key == [
        "1  5.0 s  push",
        "2  7.0 s  SQLAlchemyPoolExhausted fired",
        "3  7.2 s  first timeout",
        "4  8.1 s  SQLAlchemyPoolQueueExceedsTimeout fired",
        "5  8.1 s  SQLAlchemyPoolQueueNearTimeout fired",
        "6  9.1 s  SQLAlchemyPoolCheckoutTimeouts fired",
        "7  9.1 s  SQLAlchemyPoolCheckoutWaitNearTimeout fired",
    ]
    overlapping = [
        (a, b)
        for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
        if box_a.overlaps(box_b)
    ]
    assert not overlapping


class Drawn:
    """The PNG `plot` wrote, read back as pixels, and where a point of a panel lands in it (from
    a second figure of the same result laid out at the PNG's resolution)."""

    def __init__(self, png: Path, markers: list[Marker]) -> None:
        import matplotlib.image
        import matplotlib.pyplot as plt

        self.pixels = matplotlib.image.imread(png)[:, :, :3]  # rows from the top, RGB in 0-1
        fig = figure(result(), markers)
        try:
            fig.set_dpi(DPI)
            fig.canvas.draw()  # lays the panels out as savefig did
            self.height, width = fig.bbox.height, fig.bbox.width
            self.transforms = [ax.transData.frozen() for ax in fig.axes[:4]]  # as laid out
        finally:
            plt.close(fig)
        assert self.pixels.shape[:2] == (round(self.height), round(width))

    def pixel(self, panel: int, t: float, y: float) -> tuple[int, int]:
        """The row and column of (`t`, `y`) in the data coordinates of panel `panel`."""
        x, up = self.transforms[panel].transform((t, y))
        return round(self.height - up), round(x)

    def has(self, colour: str, panel: int, t: float, y: float, radius: int = 2) -> bool:
        """Whether `colour` is drawn within `radius` pixels of (`t`, `y`) of panel `panel`."""
        row, col = self.pixel(panel, t, y)
        patch = self.pixels[row - radius : row + radius + 1, col - radius : col + radius + 1]
        return bool(_matches(patch, colour).any())

    def count(
        self, colour: str, panel: int, ts: tuple[float, float], ys: tuple[float, float]
    ) -> int:
        """How many pixels of `colour` the rectangle `ts` by `ys` of panel `panel` holds."""
        bottom, left = self.pixel(panel, ts[0], ys[0])
        top, right = self.pixel(panel, ts[1], ys[1])
        return int(_matches(self.pixels[top : bottom + 1, left : right + 1], colour).sum())


def _matches(pixels: Any, colour: str) -> Any:
    """Pixels of `colour` over the white background, at least half covered by it: a line
    thinner than two pixels covers each of its pixels in part (tab:purple's 0.58 red is drawn
    as 0.68), so a pixel is matched as a blend of the colour and white, not by equality."""
    import numpy as np
    from matplotlib.colors import to_rgb

    ink = 1.0 - np.asarray(to_rgb(colour))  # how far the colour is from white
    away = 1.0 - pixels
    cover = (away @ ink) / (ink @ ink)  # the blend's share of the colour, fitted
    off = np.abs(away - cover[..., None] * ink).max(axis=-1)
    return (cover >= 0.5) & (off < 0.03)


CONNECTIONS, WAITING, WAIT, TIMEOUTS = range(4)


@pytest.mark.parametrize("markers", [MARKERS, []])
def test_plot_writes_a_png_that_draws_each_series_where_its_values_are(
    tmp_path: Path, markers: list[Marker]
) -> None:
    out = plot(result(), tmp_path / "sub" / "t.png", markers)
    assert out.read_bytes().startswith(PNG_SIGNATURE)
    drawn = Drawn(out, markers)
    # In use: 3 before the push, rising through 9 half-way to 15, and 3 again after the burst.
    assert drawn.has("tab:blue", CONNECTIONS, 2.5, 3)
    assert drawn.has("tab:blue", CONNECTIONS, 5.5, 9)
    assert drawn.has("tab:blue", CONNECTIONS, 15.0, 3)
    assert drawn.count("tab:blue", CONNECTIONS, (0.5, 4.5), (6, 14)) == 0
    # 200 callers waiting in the burst, none after it; p50 wait 1.9 s under the 2 s timeout.
    assert drawn.has("tab:orange", WAITING, 8.5, 200)
    assert drawn.has("tab:orange", WAITING, 15.0, 0)
    assert drawn.has("tab:green", WAIT, 6.5, 1.9)
    assert drawn.count("black", WAIT, (12.0, 18.0), (1.95, 2.05)) > 0  # the dashed timeout
    # A bar of 20 timeouts per sample inside the burst, none before the push.
    assert drawn.has("tab:red", TIMEOUTS, 8.6, 12, radius=0)  # off the grid lines
    assert drawn.count("tab:red", TIMEOUTS, (-0.5, 4.5), (0.2, 19.5)) == 0
    # The push's dash-dotted line crosses the bottom panel when the markers are given.
    push = drawn.count("tab:purple", TIMEOUTS, (4.9, 5.1), (0.5, 19.5))
    if markers:
        top, _ = drawn.pixel(TIMEOUTS, 5.0, 19.5)
        bottom, _ = drawn.pixel(TIMEOUTS, 5.0, 0.5)
        assert push > (bottom - top) / 2  # dash-dotted: more line than gap
    else:
        assert push == 0
