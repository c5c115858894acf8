"""The push, sent by a real load generator: locust, headless, in a process of its own (it
monkey-patches the standard library with gevent, which must not happen inside pytest).

tests/apps/stack_locustfile.py is the users; this module starts locust on it and reads back
what every request saw and locust's own totals."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .procs import APPS, BIN

LOCUSTFILE = APPS / "stack_locustfile.py"
INSTALL_HINT = "pip install -e '.[dev,load]'"


@dataclass(frozen=True)
class Push:
    """`users` users, one request each, every request holding its connection for `hold`
    seconds of database time. At once, unless paced: `rate` users per second, or `batch` users
    every `every` seconds."""

    users: int
    hold: float
    rate: float | None = None
    batch: int | None = None
    every: float | None = None

    def __post_init__(self) -> None:
        if self.users < 1 or self.hold < 0:
            raise ValueError(f"a push needs users >= 1 and hold >= 0: {self}")
        if self.rate is not None and self.rate <= 0:
            raise ValueError(f"a push's rate must be above 0 users/s: {self.rate}")
        if (self.batch is None) != (self.every is None) or (self.batch and self.rate):
            raise ValueError(f"batches need both batch and every, and no rate: {self}")

    def moments(self) -> list[float]:
        """When each user sends its request, seconds after the push starts (as the locustfile
        schedules them)."""
        if self.batch and self.every:
            return [i // self.batch * self.every for i in range(self.users)]
        return [i / self.rate if self.rate else 0.0 for i in range(self.users)]

    def env(self) -> dict[str, str]:
        return {
            "BURST_USERS": str(self.users),
            "BURST_HOLD": repr(self.hold),
            "BURST_RATE": repr(self.rate or 0.0),
            "BURST_BATCH": str(self.batch or 0),
            "BURST_EVERY": repr(self.every or 0.0),
        }


@dataclass(frozen=True)
class Request:
    due: float  # unix time of its moment in the push
    start: float  # unix time locust sent it (never before `due`)
    seconds: float  # until the whole answer was in
    status: int  # 0: no HTTP answer at all
    error: str | None  # what locust saw when there was no answer


@dataclass(frozen=True)
class Load:
    requests: list[Request]
    locust_requests: int  # locust's own totals, from its --json-file
    locust_failures: int

    def status(self, code: int) -> list[Request]:
        return [r for r in self.requests if r.status == code]

    def sent_as_scheduled(self, push: Push) -> bool:
        """Every request went at its moment of `push`, none before it."""
        dues = sorted(r.due for r in self.requests)
        scheduled = [dues[0] + m for m in push.moments()]
        return all(r.start >= r.due for r in self.requests) and all(
            abs(d - s) < 1e-3 for d, s in zip(dues, scheduled, strict=True)
        )

    @property
    def latest(self) -> float:
        """How late locust sent the latest request after its moment, seconds."""
        return max(r.start - r.due for r in self.requests)


def send(push: Push, base_url: str, directory: Path, timeout: float) -> Load:
    """Run `push` against `base_url` with locust; fails (RuntimeError with locust's log) if
    locust does not finish or does not record every request."""
    locust = BIN / "locust"
    if not locust.exists():
        raise FileNotFoundError(f"locust is required: {INSTALL_HINT}")
    directory.mkdir(parents=True, exist_ok=True)
    results, totals, log = (directory / n for n in ("requests.jsonl", "locust.json", "locust.log"))
    for stale in (results, totals):
        stale.unlink(missing_ok=True)
    args = [
        str(locust), "-f", str(LOCUSTFILE), "--headless", "--host", base_url,
        "--users", str(push.users), "--spawn-rate", str(push.users),
        # A limit only: the locustfile quits once every user has its answer.
        "--run-time", f"{int(timeout)}s", "--only-summary",
        "--json-file", str(totals.with_suffix("")),  # locust adds the .json
        "--exit-code-on-error", "0", "--logfile", str(log), "--loglevel", "WARNING",
    ]  # fmt: skip
    env = {**os.environ, **push.env(), "BURST_RESULTS": str(results)}
    try:
        done = subprocess.run(
            args, env=env, cwd=directory, capture_output=True, timeout=timeout + 30, check=False
        )
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"locust did not finish in {timeout + 30:g} s: {_tail(log)}") from None
    if done.returncode != 0 or not results.exists():
        raise RuntimeError(
            f"locust exited with {done.returncode} without every request recorded: "
            f"{done.stderr.decode(errors='replace')[-2000:]}{_tail(log)}"
        )
    requests = [Request(**json.loads(line)) for line in results.read_text().splitlines()]
    stats = [s for s in json.loads(totals.read_text()) if s["name"] == "/burst"]
    return Load(
        requests,
        sum(s["num_requests"] for s in stats),
        sum(s["num_failures"] for s in stats),
    )


def _tail(path: Path) -> str:
    try:
        return path.read_text(errors="replace")[-2000:]
    except OSError:
        return ""
