"""Worker liveness in multiprocess mode, with real processes writing real metric files."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from pool_exporter import exposition
from pool_exporter.gunicorn import child_exit
from pool_exporter.multiprocess import archive, liveness, slots

from .support.procs import Procs, free_port, parse, pids, procs, select, total
from .support.workers import kill9, merged, stats_files

__all__ = ["procs"]


def test_every_instrumented_process_holds_a_lock_and_counts_as_live(
    tmp_path: Path, procs: Procs
) -> None:
    _, found = procs.writer(tmp_path, "--pools", "2", "--checkouts", "3", "--fork")
    reaped = liveness.reap(str(tmp_path))
    assert sorted(reaped.live) == sorted(found.values())
    assert reaped.dead == []
    samples = merged(tmp_path)
    assert pids(samples) == set(found.values())
    assert total(samples, "sqlalchemy_pool_checkouts_total", pool="pool0") == 6
    assert total(samples, "pool_exporter_multiprocess_live_workers") == 2


def test_a_killed_child_stops_contributing_gauges_and_its_counters_stay(
    tmp_path: Path, procs: Procs
) -> None:
    _, found = procs.writer(tmp_path, "--pools", "2", "--checkouts", "3", "--fork")
    kill9(found["child"])

    samples = merged(tmp_path)
    assert pids(samples) == {found["parent"]}
    assert pids(samples, "sqlalchemy_pool_waiting_checkouts") == {found["parent"]}
    assert total(samples, "sqlalchemy_pool_checkouts_total", pool="pool1") == 6
    assert total(samples, "pool_exporter_multiprocess_dead_workers_total") == 1
    assert not Path(liveness.lock_path(str(tmp_path), found["child"])).exists()
    # Its counts moved into the archive; its stats files are gone.
    assert stats_files(tmp_path) == stats_files(tmp_path, found["parent"])
    assert len(stats_files(tmp_path)) == 2
    assert (tmp_path / archive.NAME).exists()


def test_a_child_closing_its_inherited_lock_leaves_the_parent_live(
    tmp_path: Path, procs: Procs
) -> None:
    # The child closed the descriptor it inherited and took its own lock; killing the parent
    # must not make the child look dead, nor the other way round.
    _, found = procs.writer(tmp_path, "--fork")
    kill9(found["parent"])
    reaped = liveness.reap(str(tmp_path))
    assert reaped.dead == [found["parent"]]
    assert list(reaped.live) == [found["child"]]
    assert pids(merged(tmp_path)) == {found["child"]}


def test_a_worker_that_exits_normally_is_dropped_at_the_next_scrape(
    tmp_path: Path, procs: Procs
) -> None:
    writer, found = procs.writer(tmp_path)
    assert pids(merged(tmp_path)) == {found["parent"]}
    assert writer.stdin is not None
    writer.stdin.close()
    writer.wait(10)
    samples = merged(tmp_path)
    assert pids(samples) == set()
    assert total(samples, "sqlalchemy_pool_checkouts_total") == 1


def test_child_exit_hook_drops_a_dead_worker_before_any_scrape(
    tmp_path: Path, procs: Procs, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer, found = procs.writer(tmp_path)
    writer.kill()
    writer.wait(10)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    child_exit(None, SimpleNamespace(pid=found["parent"]))
    # The lock is gone; the stats file stays until a reader folds its counts (the worker
    # slot's lock file stays for the next worker).
    kept = [p.name for p in tmp_path.iterdir() if not p.name.startswith(slots.PREFIX)]
    assert kept == stats_files(tmp_path, found["parent"])
    samples = merged(tmp_path)
    assert total(samples, "sqlalchemy_pool_checkouts_total") == 1
    assert pids(samples) == set()
    assert stats_files(tmp_path) == []


def test_gauges_of_a_process_without_a_lock_file_are_left_alone(
    tmp_path: Path, procs: Procs
) -> None:
    # Another library's workers (or an app using child_exit only) keep their series: only a
    # lock nobody holds proves a process dead.
    _, found = procs.writer(tmp_path)
    stranger = 4_999_999  # above the largest pid_max (2**22): never a real process
    gauge = MmapedDict(str(tmp_path / f"gauge_liveall_{stranger}.db"))
    gauge.write_value(mmap_key("app_busy", "app_busy", ["pid"], [str(stranger)], "Busy."), 1, 0)
    gauge.close()
    samples = merged(tmp_path)
    assert pids(samples) == {found["parent"]}
    assert pids(samples, "app_busy") == {stranger}


def test_reaping_never_takes_the_lock_of_a_live_process(tmp_path: Path, procs: Procs) -> None:
    _, found = procs.writer(tmp_path, "--fork")
    for _ in range(20):
        reaped = liveness.reap(str(tmp_path))
        assert reaped.dead == []
    assert pids(merged(tmp_path)) == set(found.values())


def test_in_process_server_refuses_to_serve_one_worker_in_multiprocess_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(ValueError, match="pool-exporter sidecar"):
        exposition.start_http_server(free_port(), "127.0.0.1")


def test_in_process_server_serves_the_default_registry_of_a_single_process_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    port = free_port()
    server, thread = exposition.start_http_server(port, "127.0.0.1")
    try:
        samples = parse(httpx.get(f"http://127.0.0.1:{port}/metrics").text)
        assert select(samples, "python_info")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_wsgi_app_of_a_worker_serves_every_workers_merged_files(
    tmp_path: Path, procs: Procs, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, found = procs.writer(tmp_path, "--fork", "--checkouts", "2")
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    app = exposition.make_wsgi_app()
    status: list[str] = []
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/metrics", "QUERY_STRING": ""}
    body = b"".join(app(environ, lambda s, h: status.append(s)))
    assert status == ["200 OK"]
    samples = parse(body.decode())
    assert pids(samples) == set(found.values())
    assert total(samples, "sqlalchemy_pool_checkouts_total", pool="pool0") == 4
    # ?name[]= reaches the merged families, which no collector declares when registered.
    only = {**environ, "QUERY_STRING": "name[]=sqlalchemy_pool_checkouts_total"}
    filtered = parse(b"".join(app(only, lambda s, h: status.append(s))).decode())
    assert {s[0] for s in filtered} == {"sqlalchemy_pool_checkouts_total"}
    assert total(filtered, "sqlalchemy_pool_checkouts_total", pool="pool0") == 4


def test_an_exited_workers_own_live_gauges_are_dropped(tmp_path: Path, procs: Procs) -> None:
    # The application's prometheus-client gauges of a process whose lock is free go with it.
    _, found = procs.writer(tmp_path)
    pid = found["parent"]
    gauge = MmapedDict(str(tmp_path / f"gauge_liveall_{pid}.db"))
    gauge.write_value(mmap_key("app_busy", "app_busy", ["pid"], [str(pid)], "Busy."), 1, 0)
    gauge.close()
    assert pids(merged(tmp_path), "app_busy") == {pid}
    kill9(pid)
    assert pids(merged(tmp_path), "app_busy") == set()
    assert not (tmp_path / f"gauge_liveall_{pid}.db").exists()


MODE = """
import os, sqlalchemy as sa
from pool_exporter import instrument, multiprocess
from pool_exporter.multiprocess.store import MultiprocessPoolStats
handle = instrument(sa.create_engine("sqlite://"), name="p")
print(multiprocess.directory(), isinstance(handle.stats, MultiprocessPoolStats))
"""


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"PROMETHEUS_MULTIPROC_DIR": ""}, "None False"),
        ({"prometheus_multiproc_dir": "{dir}"}, "{dir} True"),
        ({"PROMETHEUS_MULTIPROC_DIR": "", "prometheus_multiproc_dir": "{dir}"}, "{dir} True"),
    ],
)
def test_one_definition_of_multiprocess_mode(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if k.lower() != "prometheus_multiproc_dir"}
    clean.update({k: v.format(dir=tmp_path) for k, v in env.items()})
    out = subprocess.run(
        [sys.executable, "-c", MODE], env=clean, cwd=tmp_path, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    assert out.stdout.split() == expected.format(dir=tmp_path).split()
    written = sorted(p.name for p in tmp_path.iterdir())
    if expected.endswith("True"):
        assert len(stats_files(tmp_path)) == 1
        assert any(name.endswith(".lock") for name in written)
    else:  # no liveness lock, no stats file: single-process mode
        assert written == []
