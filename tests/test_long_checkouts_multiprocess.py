"""Multiprocess mode: each worker's oldest checkout and long checkouts, through the sidecar."""

from __future__ import annotations

from pathlib import Path

from .support.procs import Procs, by_pid, procs, select, start_sidecar, total, wait_until

__all__ = ["procs"]

OLDEST = "sqlalchemy_pool_oldest_checkout_seconds"


def test_each_worker_reports_its_oldest_checkout_and_long_checkouts_through_the_sidecar(
    tmp_path: Path, procs: Procs
) -> None:
    directory = tmp_path / "multiproc"
    directory.mkdir()
    work = tmp_path / "app"
    work.mkdir()
    _, found = procs.writer(directory, str(work), "--fork", app="long_holder.py")
    sidecar = start_sidecar(procs, directory)

    def ages() -> dict[int, float]:
        return by_pid(sidecar.scrape(), OLDEST, pool="holder")

    # the age grows at scrape time although no worker writes anything while it holds
    held = wait_until(
        lambda: (a := ages()) and set(a) == set(found.values()) and min(a.values()) >= 1.0 and a,
        what="both workers' checkouts to be 1 s old",
    )
    assert all(age < 30 for age in held.values())
    samples = sidecar.scrape()
    assert not select(samples, "sqlalchemy_pool_oldest_checkout_started_timestamp_seconds")
    # each process (the child after fork too) found its own long checkout, once
    assert total(samples, "sqlalchemy_pool_long_checkouts_total", pool="holder") == 2
    for pid in found.values():
        log = (work / f"log-{pid}.txt").read_text()
        assert log.count("checked out for") == 1, log
        assert "in hold_in_worker" in log

    (work / "release").touch()
    wait_until(
        lambda: all((work / f"released-{pid}").exists() for pid in found.values()),
        what="both workers to check in",
    )
    assert ages() == dict.fromkeys(found.values(), 0.0)
    assert total(sidecar.scrape(), "sqlalchemy_pool_long_checkouts_total", pool="holder") == 2
    for pid in found.values():
        assert "came back after" in (work / f"log-{pid}.txt").read_text()
