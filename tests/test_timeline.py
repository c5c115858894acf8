"""The demo's PNG: every moment marked and named, and no two texts drawn over each other
where alerts fire together."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from pool_exporter.incident.results import Result, Sample
from pool_exporter.incident.timeline import Marker, figure, plot, tags

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


@pytest.mark.parametrize("markers", [MARKERS, []])
def test_plot_writes_a_png(tmp_path: Path, markers: list[Marker]) -> None:
    out = plot(result(), tmp_path / "sub" / "t.png", markers)
    assert out.read_bytes().startswith(PNG_SIGNATURE)
