"""Issue 28 on real parts: PostgreSQL behind a real PgBouncer, the incident's Flask app under
gunicorn gthread workers, the sidecar, Prometheus with the shipped rules, and locust sending the
push (tests/support/stack.py). Scaled to run in seconds with the incident's ratios of work to
capacity at every layer (stack.SCALED says how).

The "before" half: at SQLAlchemy's defaults the push times out in the app pools, counted alike
by the app, the exporter and Prometheus; the app-pool-only recommendations of the issue move
the queue into PgBouncer. The "after" half: advise, asked about the first push from what
Prometheus scraped of it, recommends settings (the pooler raised within the database's budget,
or the push paced where the budget is too small) that, applied to the stack, serve the same
push.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .support import cli
from .support import stack as st
from .support.procs import Procs, procs
from .support.stack_advice import AdviceShapeError, Recommendation, from_advise
from .support.stack_load import Push, send

__all__ = ["procs"]

S = st.SCALED
PUSH = Push(S.users, S.hold)


# The issue's two app-pool-only answers of today's advise, scaled as SCALED scales the push
# (users and timeouts by a fifth). "24 + 626, pool_timeout 3 s": app pools for 1,300 of the
# 2,000 users, here 2 x (5 + 125) = 260 of 400, with a 0.6 s timeout. "23 + 1,009": app pools
# for every user; gunicorn does not split a push evenly between its workers (231 and 169 of
# 400 in one run), so here each worker's pool takes the whole push, 5 + 395: no request can
# wait in an app pool, and whatever waits, waits in PgBouncer.
FIX_ONE = st.AppPools(5, 125, 0.6)
FIX_TWO = st.AppPools(5, 395, 0.6)


def test_the_scaled_stack_keeps_the_incidents_load_at_every_layer() -> None:
    incident, scaled = st.INCIDENT, st.SCALED
    for layer in ("app_connections", "pooler", "budget"):
        assert scaled.load(getattr(scaled, layer)) == pytest.approx(
            incident.load(getattr(incident, layer))
        ), layer
    # Where the push queues: the app pools time out, a queue in the pooler waits past the
    # timeout, the database's budget would serve it in time.
    assert scaled.load(scaled.app_connections) > scaled.load(scaled.pooler) > 1
    assert scaled.load(scaled.budget) < 1
    assert scaled.max_client_conn / scaled.users == incident.max_client_conn / incident.users
    assert scaled.scrape / scaled.pool_timeout == incident.scrape / incident.pool_timeout


def assert_counted_alike(out: st.Outcome) -> None:
    """The app, the exporter (the sidecar) and Prometheus count every request as locust saw
    it: served and timed out, exactly."""
    seen = st.Counts(out.served, out.pool_timeouts, out.errors)
    assert out.served + out.pool_timeouts + out.errors == out.push.users, out.summary()
    assert out.app == seen, out.summary()
    assert out.exporter == out.prometheus == st.Counts(out.served, out.pool_timeouts, 0), (
        out.summary()
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_at_the_defaults_the_push_times_out_in_the_app_pools_counted_alike_everywhere(
    tmp_path: Path, procs: Procs, pg_url: str
) -> None:
    with st.running(tmp_path, procs, pg_url) as stack:
        out = stack.burst(PUSH)
    print(f"\n{out.summary()}")
    assert_counted_alike(out)
    assert out.errors == 0
    # The app pools serve 30 at once for the 6 s timeout: about 7 rounds of 0.86 s, 30 each.
    assert 150 <= out.served <= 300, out.summary()
    assert out.first_timeout_at is not None and out.first_timeout_at >= S.pool_timeout
    # The queue is in the app pools: the database sees their 30 connections at most, below
    # the pooler's 40, and no client waits in PgBouncer for more than a fraction of the
    # timeout (the first ones wait while it opens its server connections one at a time).
    assert out.database_peak <= S.app_connections < S.pooler
    assert out.pooler_longest_wait < S.pool_timeout / 2, out.summary()
    # The page comes before the first timeout (the incident's lead: 24 s of 30).
    paged = out.alerts_at.get("SQLAlchemyPoolQueueExceedsTimeout")
    assert paged is not None and paged < out.first_timeout_at, out.summary()


@pytest.mark.slow
@pytest.mark.postgres
def test_app_pools_for_most_of_the_push_still_time_out_and_queue_in_pgbouncer_past_the_timeout(
    tmp_path: Path, procs: Procs, pg_url: str
) -> None:
    with st.running(tmp_path, procs, pg_url, pools=FIX_ONE) as stack:
        out = stack.burst(PUSH)
    print(f"\n{out.summary()}")
    assert_counted_alike(out)
    assert out.errors == 0
    # Those the app pools could not take time out, as in the incident (508 of 2,000): most of
    # them. Not all: the push opens 130 connections in each worker at once, and on 2 busy cores
    # the last requests reach their pool late, still waiting when PgBouncer hands back its first
    # 40 connections (one hold, 0.86 s, in); each of those serves one more. A request would
    # have to reach its pool more than a hold late to see a second round. Seen: 114 of 140 with
    # the suite's other modules beside it, 100 on a fresh machine (first timeout at 1.2 s).
    beyond = S.users - 2 * (FIX_ONE.pool_size + FIX_ONE.max_overflow)
    assert out.pool_timeouts > beyond / 2, out.summary()
    # ... and those they took wait in PgBouncer, many times the pool timeout, behind its 40
    # server connections: the database never sees more.
    assert out.pooler_longest_wait > 3 * FIX_ONE.pool_timeout, out.summary()
    assert out.slowest > out.pooler_longest_wait > FIX_ONE.pool_timeout
    assert out.database_peak == S.pooler
    assert "PgBouncerWaitNearPoolTimeout" in out.alerts_at, out.summary()


@pytest.mark.slow
@pytest.mark.postgres
def test_app_pools_for_the_whole_push_only_move_the_queue_into_pgbouncer(
    tmp_path: Path, procs: Procs, pg_url: str
) -> None:
    with st.running(tmp_path, procs, pg_url, pools=FIX_TWO) as stack:
        out = stack.burst(PUSH)
    print(f"\n{out.summary()}")
    assert_counted_alike(out)
    # No pool timeouts, and no errors ...
    assert (out.pool_timeouts, out.errors) == (0, 0), out.summary()
    # ... because the queue is in PgBouncer: clients wait there past the 6 s the users waited
    # at the defaults, and the slowest request takes longer than that too (the incident: 40 s
    # and 41 s against 30 s).
    assert out.pooler_longest_wait > S.pool_timeout, out.summary()
    assert out.slowest > S.pool_timeout, out.summary()
    assert out.pooler_waiting_peak >= S.users // 2, out.summary()
    assert out.database_peak == S.pooler


def assert_served_within_the_timeout(out: st.Outcome) -> None:
    """What a recommendation must do (issue 28): 0 pool timeouts and 0 errors, the slowest
    request within the pool_timeout the users had at the defaults, the database under its
    budget."""
    assert_counted_alike(out)
    assert (out.served, out.pool_timeouts, out.errors) == (S.users, 0, 0), out.summary()
    assert out.slowest <= S.pool_timeout, out.summary()
    assert out.database_peak < out.budget, out.summary()


# A recommendation in the shape issue 28 gives `advise --json`, worked out by hand from SCALED:
# the push paced at 40 users/s (400 users over 10 s) against the pooler's 40 / 0.86 s = 46.5
# per second.
PACED = {
    "pool_size": 5, "max_overflow": 35, "pool_timeout": S.pool_timeout,
    "pooler": {"default_pool_size": S.pooler, "max_client_conn": S.max_client_conn},
    "push": {"rate": 40},
}  # fmt: skip


def test_a_recommendation_is_read_in_the_shape_issue_28_gives_advise_json() -> None:
    report = [{"advice": {"pool": "app", **PACED, "predicted": None}}]
    assert from_advise(report, "app") == Recommendation(
        5, 35, S.pool_timeout, S.pooler, S.max_client_conn, 40.0
    )
    # Without `push` the push goes at once; without `pooler`, advise has not sized the pooler
    # it measured, which the test of advise refuses by name.
    assert Recommendation.from_json({"pool_size": 5, "max_overflow": 0, "pool_timeout": 1})
    raised = {**PACED, "pooler": {"default_pool_size": 80}}
    assert Recommendation.from_json(raised).pooler_max_client_conn is None  # kept as it is
    no_pooler = [{"advice": {"pool": "app", "pool_size": 21, "max_overflow": 113,
                             "pool_timeout": 3.0, "pooler_max_client_conn": 600}}]  # fmt: skip
    with pytest.raises(AdviceShapeError, match="names no pooler settings"):
        from_advise(no_pooler, "app")
    for bad in ({"pool_size": 0}, {"max_overflow": 1.5}, {"pool_timeout": -1}, {"push": 40},
                {"pooler": {"max_client_conn": 600}}, {"push": {"rate": 0}}):  # fmt: skip
        with pytest.raises(AdviceShapeError):
            Recommendation.from_json({**PACED, **bad})


# The database's budget decides advise's answer: with the incident's 97 it raises the pooler
# within it (400 x 0.86 s on about 80 server connections: under 6 s); with 45 no pooler it
# allows serves the push at once (400 x 0.86 s on 45: 7.6 s), so it paces the push.
BUDGETS = {"the pooler raised": S.budget, "the push paced": 45}


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.serial  # the settings it applies may take most of the database's connections
@pytest.mark.parametrize("budget", list(BUDGETS.values()), ids=list(BUDGETS))
def test_advise_from_prometheus_recommends_settings_that_serve_the_same_push(
    budget: int, tmp_path: Path, procs: Procs, pg_url: str
) -> None:
    with st.running(tmp_path, procs, pg_url, budget=budget) as stack:
        before = stack.burst(PUSH)
        print(f"\n{before.summary()}")
        assert before.pool_timeouts > 0
        advice = tmp_path / "advice.json"
        result = cli.run(
            "advise", "--prometheus", stack.prometheus.url, "--window", "30s",
            "--pool", st.POOL, "--users", str(S.users), "--ramp", "0", "--json", str(advice),
            timeout=120,
        )  # fmt: skip
        print(result.stdout)
        assert result.returncode == 0, result.stdout + result.stderr
        recommendation = from_advise(json.loads(advice.read_text()), st.POOL)
        push = stack.apply(recommendation, PUSH)
        out = stack.burst(push)
    print(f"\n{out.summary()}")
    assert_served_within_the_timeout(out)
    # Every setting advise named was applied: the pooler's, and the push's pace if any.
    assert out.pooler.pool_size == recommendation.pooler_pool_size
    assert recommendation.pooler_pool_size is not None
    if budget == S.budget:
        assert recommendation.push_rate is None and recommendation.pooler_pool_size > S.pooler
    else:
        assert recommendation.push_rate is not None and recommendation.pooler_pool_size <= budget
        assert out.load.sent_as_scheduled(push), out.summary()


class _Answer(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def answering() -> Iterator[str]:
    """A plain HTTP server answering every request at once: the load generator on its own."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
@pytest.mark.parametrize(
    "push",
    [Push(12, 0.0), Push(12, 0.0, rate=20.0), Push(12, 0.0, batch=4, every=0.4)],
    ids=["at once", "20 users/s", "4 users every 0.4 s"],
)
def test_locust_sends_each_user_of_a_push_once_and_never_before_its_moment(
    push: Push, tmp_path: Path
) -> None:
    with answering() as url:
        load = send(push, url, tmp_path, timeout=60)
    assert [r.status for r in load.requests] == [200] * push.users
    assert (load.locust_requests, load.locust_failures) == (push.users, 0)
    assert load.sent_as_scheduled(push)
