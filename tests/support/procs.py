"""Real processes for the sidecar tests: start them, scrape them, always stop them."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pool_exporter.incident.promserver import free_port

ROOT = Path(__file__).resolve().parents[2]
APPS = ROOT / "tests" / "apps"
BIN = Path(sys.executable).parent


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll `check` until it returns something truthy; fail with its last value or error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what or check}: last {last!r}")


Samples = list[tuple[str, dict[str, str], float]]


def parse(text: str) -> Samples:
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def select(samples: Samples, name: str, **labels: str) -> Samples:
    return [s for s in samples if s[0] == name and all(s[1].get(k) == v for k, v in labels.items())]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(s[2] for s in select(samples, name, **labels))


INFO = "sqlalchemy_pool_info"


def pid_of(samples: Samples, sample: tuple[str, dict[str, str], float]) -> int:
    """The pid of a sample: its own `pid` label (prometheus-client's gauges), or the one the
    info metric of its pool and worker carries (pool-exporter's per-worker gauges)."""
    labels = sample[1]
    if "pid" in labels:
        return int(labels["pid"])
    infos = select(samples, INFO, pool=labels["pool"], worker=labels["worker"])
    found = {int(info[1]["pid"]) for info in infos}
    assert len(found) == 1, (sample, infos)
    return found.pop()


def pids(samples: Samples, name: str = "sqlalchemy_pool_connections") -> set[int]:
    return {pid_of(samples, s) for s in select(samples, name)}


def by_pid(samples: Samples, name: str, **labels: str) -> dict[int, float]:
    """The value of each worker's `name` series, by the worker's pid."""
    return {pid_of(samples, s): s[2] for s in select(samples, name, **labels)}


def workers(samples: Samples, name: str = "sqlalchemy_pool_connections") -> set[str]:
    return {s[1]["worker"] for s in select(samples, name)}


@dataclass
class Proc:
    """A started process; its output goes to a file so that a test can read the logs."""

    popen: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Procs:
    """Every process a test starts; all of them are stopped when the test ends."""

    tmp: Path
    started: list[Proc] = field(default_factory=list)
    writers: list[subprocess.Popen[str]] = field(default_factory=list)

    def start(self, args: list[str], env: dict[str, str] | None = None, name: str = "p") -> Proc:
        log = self.tmp / f"{name}-{len(self.started)}.log"
        with open(log, "wb") as out:
            popen = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=ROOT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # its workers can be stopped with it, by group id
            )
        proc = Proc(popen, log)
        self.started.append(proc)
        return proc

    def writer(
        self,
        multiproc_dir: Path,
        *args: str,
        app: str = "pool_writer.py",
        prefix: tuple[str, ...] = (),
    ) -> tuple[subprocess.Popen[str], dict[str, int]]:
        """tests/apps/pool_writer.py (or another of tests/apps) in multiprocess mode, run by
        the command `prefix` if given, and the pids it printed by role (`parent`, and `child`
        with --fork)."""
        writer = subprocess.Popen(
            [*prefix, sys.executable, str(APPS / app), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(multiproc_dir)},
        )
        self.writers.append(writer)
        assert writer.stdout is not None
        found = {}
        forks = "--fork" in args or "--uninstrument-and-fork" in args
        for _ in range(2 if forks else 1):
            role, pid = writer.stdout.readline().split()
            found[role] = int(pid)
        return writer, found

    def stop_all(self) -> None:
        for writer in self.writers:
            if writer.stdin is not None:
                writer.stdin.close()  # a forked child reads the same stdin: EOF ends it too
            try:
                writer.wait(5)
            except subprocess.TimeoutExpired:
                writer.kill()
                writer.wait(5)
        for proc in reversed(self.started):
            if proc.popen.poll() is None:
                _signal_group(proc.popen.pid, signal.SIGTERM)
                try:
                    proc.popen.wait(5)
                except subprocess.TimeoutExpired:
                    _signal_group(proc.popen.pid, signal.SIGKILL)
                    proc.popen.wait(5)
            else:  # the leader is gone; workers it left behind still belong to its group
                _signal_group(proc.popen.pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Procs]:
    made = Procs(tmp_path)
    try:
        yield made
    finally:
        made.stop_all()


@dataclass
class Sidecar:
    proc: Proc
    url: str
    client: httpx.Client

    def scrape(self, path: str = "/metrics") -> Samples:
        response = self.client.get(self.url + path)
        response.raise_for_status()
        return parse(response.text)

    def text(self, path: str = "/metrics") -> str:
        return self.client.get(self.url + path).text


def start_sidecar(
    procs: Procs,
    multiproc_dir: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    scheme: str = "http",
    client: httpx.Client | None = None,
) -> Sidecar:
    port = free_port()
    args = [
        str(BIN / "pool-exporter"),
        "sidecar",
        f"--web.listen-address=127.0.0.1:{port}",
        f"--multiproc-dir={multiproc_dir}",
        *extra,
    ]
    clean_env = {"POOL_EXPORTER_DATABASE_URL": "", "POOL_EXPORTER_PGBOUNCER_URL": "", **(env or {})}
    proc = procs.start(args, clean_env, name="sidecar")
    sidecar = Sidecar(proc, f"{scheme}://127.0.0.1:{port}", client or httpx.Client(timeout=10))

    def healthy() -> bool:
        if proc.popen.poll() is not None:
            pytest.fail(f"the sidecar exited with {proc.popen.returncode}: {proc.output()}")
        return sidecar.client.get(sidecar.url + "/-/healthy").status_code in (200, 401)

    wait_until(healthy, what="the sidecar to serve")
    return sidecar
