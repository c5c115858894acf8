"""The pooler's SHOW STATS counters as advise reads them from a real Prometheus: the database's
time per transaction is a ratio of two counters' growth over the window, and it must not bend
with where the window's edges fall.

The samples are written with promtool's backfill (`tsdb create-blocks-from openmetrics`), so
the queries see exactly these points at exactly these times: nothing here depends on timing.
They are a push as a freshly started stack's sidecar scraped it (tests/test_stack.py): the
series begin in the middle of the push, with 30 transactions counted and none of their time
yet, since PgBouncer counts a transaction when it begins and adds its time when it ends.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator

import pytest

from pool_exporter import metrics as m
from pool_exporter.incident.measured import layers_from_prometheus
from pool_exporter.incident.promserver import PrometheusServer

from .support.binaries import require_binary

XACTS, XACT_TIME, WAIT = (
    m.PGBOUNCER_TRANSACTIONS,
    m.PGBOUNCER_SERVER_TRANSACTION_TIME,
    m.PGBOUNCER_CLIENT_WAIT,
)
# (transactions, their seconds, the clients' wait) at each 1 s scrape of the push: 2 short
# ones and 30 begun at the first sample, 30 more every second, each 0.866 s long
PUSH = [
    (32, 0.056, 0.778),
    (62, 26.782, 0.778),
    (92, 52.667, 0.778),
    (122, 78.559, 0.778),
    (152, 104.456, 0.778),
    (182, 130.348, 0.778),
    (233, 174.390, 0.778),
    *[(242, 208.060, 0.778)] * 25,
]
START = float(int(time.time()) // 3600 * 3600 - 4 * 3600)  # in a block of its own, hours ago
# Each case a pooler (its series, as advise sums them) of its own, far enough from the others
# in time that a query sees it alone
OLDER, RESTARTED = START + 1000, START + 2000


def openmetrics(series: dict[str, list[tuple[float, tuple[float, float, float]]]]) -> str:
    """The three counter families, one series per database, at the given times."""
    lines = []
    for i, metric in enumerate((XACTS, XACT_TIME, WAIT)):
        family = metric.sample.removesuffix("_total")
        lines.append(f"# TYPE {family} counter")
        for database, points in series.items():
            lines += [
                f'{metric.sample}{{database="{database}"}} {values[i]} {at:.3f}'
                for at, values in points
            ]
    return "\n".join([*lines, "# EOF", ""])


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    promtool = require_binary("promtool")
    born = [(START + t, v) for t, v in enumerate(PUSH)]
    # a pooler that ran before the window: 1,000 transactions of 0.1 s, then the same push
    older = [(OLDER - 60 + t, (1000.0, 100.0, 5.0)) for t in range(60)] + [
        (OLDER + t, (1000 + x, 100 + s, 5 + w)) for t, (x, s, w) in enumerate(PUSH)
    ]
    # a pooler restarted inside the window: its counters start again from zero
    restarted = [(RESTARTED - 60 + t, (500.0, 50.0, 1.0)) for t in range(60)] + [
        (RESTARTED + t, v) for t, v in enumerate(PUSH)
    ]
    source = tmp_path_factory.mktemp("backfill") / "samples.om"
    source.write_text(openmetrics({"born": born, "older": older, "restarted": restarted}))
    server = PrometheusServer(binary=require_binary("prometheus"))
    subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source),
         str(server.work_dir / "data")],
        check=True, capture_output=True,
    )  # fmt: skip
    with server:
        yield server


def service(prom: PrometheusServer, at: float) -> float | None:
    return layers_from_prometheus(prom.api, "30s", "", at).service_time


def increase_ratio(prom: PrometheusServer, at: float) -> float:
    """What increase() makes of the same window: each counter extrapolated on its own."""
    x, s, w = (
        prom.api.scalar(f"sum(increase({metric.sample}[30s]))", at)
        for metric in (XACTS, XACT_TIME, WAIT)
    )
    assert x and s is not None and w is not None
    return (s - w) / x


@pytest.mark.parametrize("after", [8.5, 12.5, 20.5, 28.5])
def test_a_series_born_inside_the_window_counts_from_zero_wherever_the_window_ends(
    prometheus: PrometheusServer, after: float
) -> None:
    at = START + after
    x, s, w = PUSH[-1]
    assert service(prometheus, at) == pytest.approx((s - w) / x, rel=1e-6)


def test_increase_would_take_the_same_windows_for_slower_transactions(
    prometheus: PrometheusServer,
) -> None:
    """Why the growth is not increase()'s: on the same data, each counter extrapolated on its
    own overstates the database's time by 9-14 % here (enough for advise to size the pooler on
    transactions a tenth longer, or shorter where the window cuts the push the other way)."""
    x, s, w = PUSH[-1]
    for after in (8.5, 28.5):
        assert increase_ratio(prometheus, START + after) > 1.05 * (s - w) / x


def test_a_series_older_than_the_window_counts_what_it_grew_by_inside_it(
    prometheus: PrometheusServer,
) -> None:
    x, s, w = PUSH[-1]
    at = OLDER + 20.5  # the window begins 9.5 s before the push: flat there
    assert service(prometheus, at) == pytest.approx((s - w) / x, rel=1e-6)


def test_a_series_that_reset_inside_the_window_takes_increases_figure(
    prometheus: PrometheusServer,
) -> None:
    at = RESTARTED + 20.5
    assert service(prometheus, at) == pytest.approx(increase_ratio(prometheus, at), rel=1e-6)
