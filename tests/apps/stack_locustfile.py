"""Locust users for the stack's push (tests/support/stack_load.py runs `locust --headless -f`).

Every user makes one request, GET /burst?hold=S, at its moment in the push and stops. Locust
spawns all users at once; each then waits for its moment, counted from the instant the last
one was spawned:

- at once (BURST_RATE 0 and no batches): every user at that instant;
- BURST_RATE users per second: the i-th user i / rate seconds after it;
- batches: BURST_BATCH users every BURST_EVERY seconds.

Locust's own ramp (--spawn-rate R) starts floor(R) users every floor(R) / R seconds: for any
rate of 1 user/s or more, a batch about once a second. The push's schedule is kept here
instead: no request is sent before its moment (how late each one went is recorded).

Each request's moment (`due`, unix time), start, response time and status go to BURST_RESULTS
as JSON lines; locust's own totals go to its --json-file. Once every user has made its request
the run quits.
"""

import itertools
import json
import os
import time

import gevent
from gevent.event import Event
from locust import FastHttpUser, events, task
from locust.env import Environment
from locust.exception import StopUser

USERS = int(os.environ["BURST_USERS"])
HOLD = os.environ["BURST_HOLD"]
RATE = float(os.environ.get("BURST_RATE", "0"))
BATCH = int(os.environ.get("BURST_BATCH", "0"))
EVERY = float(os.environ.get("BURST_EVERY", "0"))
RESULTS = os.environ["BURST_RESULTS"]


def moment(i: int) -> float:
    """Seconds after the push starts at which the i-th user (from 0) sends its request."""
    if BATCH:
        return (i // BATCH) * EVERY
    if RATE:
        return i / RATE
    return 0.0


_numbers = itertools.count()
_spawned = Event()
_push_start = 0.0  # unix time: every user spawned
_environment: Environment | None = None
_records: list[dict[str, object]] = []


@events.init.add_listener
def _keep_environment(environment: Environment, **_: object) -> None:
    global _environment
    _environment = environment


@events.spawning_complete.add_listener
def _all_spawned(**_: object) -> None:
    global _push_start
    _push_start = time.time()
    _spawned.set()


@events.request.add_listener
def _record(response_time, response, exception, context, start_time=None, **_: object) -> None:
    status = getattr(response, "status_code", 0) or 0
    error = None if exception is None or status else f"{type(exception).__name__}: {exception}"
    _records.append({
        "due": context["due"], "start": start_time, "seconds": response_time / 1000,
        "status": status, "error": error,
    })  # fmt: skip
    if len(_records) == USERS and _environment is not None and _environment.runner is not None:
        with open(RESULTS, "w") as out:
            out.writelines(json.dumps(r) + "\n" for r in _records)
        # From a greenlet of its own: quit() kills the users' greenlets, this one among them.
        gevent.spawn(_environment.runner.quit)


class PushUser(FastHttpUser):
    # Longer than any run: the test reads slow answers, it does not cut them off.
    network_timeout = connection_timeout = 300.0

    @task
    def one_request(self) -> None:
        number = next(_numbers)
        _spawned.wait()
        due = _push_start + moment(number)
        while (delay := due - time.time()) > 0:  # a timer may fire a little early
            gevent.sleep(delay)
        # A 503 (pool timeout) is a failure to locust as to the user; it is recorded either way.
        self.client.get(f"/burst?hold={HOLD}", name="/burst", context={"due": due})
        raise StopUser
