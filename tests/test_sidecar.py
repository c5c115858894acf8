"""`pool-exporter sidecar` beside real multi-worker servers (gunicorn, uvicorn) on PostgreSQL."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bcrypt
import httpx
import pytest
import yaml

from .support.binaries import require_binary
from .support.cli import run
from .support.procs import (
    BIN,
    INFO,
    ROOT,
    Procs,
    Samples,
    Sidecar,
    by_pid,
    free_port,
    pids,
    procs,
    select,
    start_sidecar,
    total,
    wait_until,
)
from .support.tls import self_signed

__all__ = ["procs"]

WORKERS = 3
REQUESTS = 60
CONCURRENCY = 12


def start_app(
    procs: Procs,
    kind: str,
    directory: Path,
    pg_url: str,
    name: str,
    *extra: str,
    workers: int = WORKERS,
) -> str:
    """gunicorn (sync workers, --preload, with or without deploy/gunicorn.conf.py) or
    uvicorn --workers; returns the base URL once every worker has published its pool."""
    port = free_port()
    env = {
        "PROMETHEUS_MULTIPROC_DIR": str(directory),
        "APP_DATABASE_URL": pg_url,
        "APP_NAME": name,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": str(workers),
    }
    apps = str(ROOT / "tests" / "apps")
    if kind == "gunicorn+config":
        args = [str(BIN / "gunicorn"), "-c", str(ROOT / "deploy" / "gunicorn.conf.py")]
        args += ["--pythonpath", apps, "wsgi_app:app"]
    elif kind == "gunicorn":
        args = [str(BIN / "gunicorn"), "--preload", "-w", str(workers), "-k", "sync"]
        args += ["-b", f"127.0.0.1:{port}", "--pythonpath", apps, *extra, "wsgi_app:app"]
    else:
        args = [str(BIN / "uvicorn"), "--workers", str(workers), "--port", str(port)]
        args += ["--host", "127.0.0.1", "--app-dir", apps, "--no-access-log", "asgi_app:app"]
    procs.start(args, env, name=kind)
    url = f"http://127.0.0.1:{port}"
    wait_until(lambda: httpx.get(url + "/pid").status_code == 200, 20, f"{kind} to serve")
    return url


def instrumented_pids(sidecar: Sidecar) -> set[int]:
    return pids(sidecar.scrape())


def in_use_by_pid(samples: Samples) -> dict[int, float]:
    return by_pid(samples, "sqlalchemy_pool_connections", pool="app", state="in_use")


@pytest.fixture
def multiproc(tmp_path: Path) -> Path:
    """An empty multiprocess directory for the application and its sidecar."""
    directory = tmp_path / "multiproc"
    directory.mkdir()
    return directory


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("kind", ["gunicorn", "gunicorn+config", "uvicorn"])
def test_sidecar_merges_every_worker_and_drops_a_killed_one(
    kind: str, multiproc: Path, procs: Procs, pg_url: str, pg_app_name: str
) -> None:
    base = start_app(procs, kind, multiproc, pg_url, pg_app_name)
    sidecar = start_sidecar(procs, multiproc)
    # The preloaded gunicorn master instrumented the engine too and stays alive: one series
    # for it, at zero, beside one per worker.
    expected_series = WORKERS + (1 if kind.startswith("gunicorn") else 0)
    wait_until(lambda: len(instrumented_pids(sidecar)) == expected_series, 20, "all workers")

    served: list[int] = []
    scrapes: list[Samples] = []
    done = threading.Event()

    def scrape_during_load() -> None:
        while not done.is_set():
            scrapes.append(sidecar.scrape())

    def request(_: int) -> int:
        with httpx.Client(timeout=20) as client:
            return int(client.get(base + "/query", params={"sleep": "0.05"}).text)

    watcher = threading.Thread(target=scrape_during_load)
    watcher.start()
    try:
        with ThreadPoolExecutor(CONCURRENCY) as pool:
            served = list(pool.map(request, range(REQUESTS)))
    finally:
        done.set()
        watcher.join()

    after = sidecar.scrape()
    assert total(after, "sqlalchemy_pool_checkouts_total", pool="app") == REQUESTS
    assert total(after, "sqlalchemy_pool_checkout_wait_seconds_count", pool="app") == REQUESTS
    assert set(served) <= pids(after)
    assert len(pids(after)) == expected_series
    assert set(in_use_by_pid(after).values()) == {0}
    # While the load ran, each worker's in-use stayed within its own pool's capacity.
    assert scrapes, "no scrape completed during the load"
    capacity = by_pid(after, "sqlalchemy_pool_max_connections", pool="app")
    assert set(capacity.values()) == {3}
    for samples in scrapes:
        for pid, in_use in in_use_by_pid(samples).items():
            assert 0 <= in_use <= capacity[pid]
    assert max(sum(in_use_by_pid(s).values()) for s in scrapes) >= 1

    victim = served[0]
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: victim not in instrumented_pids(sidecar), 10, f"pid {victim} to go")
    final = sidecar.scrape()
    assert victim not in pids(final, "sqlalchemy_pool_info")
    # Counters of the killed worker still count: totals never go backwards.
    assert total(final, "sqlalchemy_pool_checkouts_total", pool="app") == REQUESTS
    # The sidecar wrote nothing of its own into the application's directory.
    sidecar_pid = str(sidecar.proc.popen.pid)
    assert not [p for p in os.listdir(multiproc) if sidecar_pid in p]


def counted(sidecar: Sidecar, requests: int) -> Samples:
    """The first scrape that counts every request's checkout (a worker that just served one
    may still be storing it)."""
    return wait_until(
        lambda: (
            (s := sidecar.scrape())
            and total(s, "sqlalchemy_pool_checkouts_total", pool="app") == requests
            and s
        ),
        20,
        "every checkout to be counted",
    )


@pytest.mark.slow
@pytest.mark.postgres
def test_gunicorn_recycling_workers_keeps_totals_exact_and_files_bounded(
    multiproc: Path, procs: Procs, pg_url: str, pg_app_name: str
) -> None:
    recycle = ["--max-requests", "5", "--max-requests-jitter", "0"]
    base = start_app(procs, "gunicorn", multiproc, pg_url, pg_app_name, *recycle)
    sidecar = start_sidecar(procs, multiproc)
    requests = 60
    totals: list[float] = []
    served: set[int] = set()
    with httpx.Client(timeout=20) as client:
        for n in range(requests):
            served.add(int(client.get(base + "/query", params={"sleep": "0"}).text))
            if n % 5 == 0:
                totals.append(total(sidecar.scrape(), "sqlalchemy_pool_checkouts_total"))
    # Each worker served 5 requests at most: a dozen workers lived and exited.
    assert len(served) >= requests // 5
    final = counted(sidecar, requests)
    totals.append(total(final, "sqlalchemy_pool_checkouts_total"))
    assert totals == sorted(totals), "the total went backwards"
    assert total(final, "sqlalchemy_pool_checkout_wait_seconds_count", pool="app") == requests
    assert total(final, "sqlalchemy_pool_connection_hold_seconds_count", pool="app") == requests

    # Gauges only for the live processes (the preloaded master and its WORKERS workers), and
    # files for them only: the exited workers are in the archive. gunicorn may still be
    # replacing the worker that served the last request, so wait for a scrape and a listing
    # that agree.
    def settled() -> tuple[Samples, list[str]] | None:
        scraped = sidecar.scrape()
        stats = [p for p in os.listdir(multiproc) if p.endswith(".stats")]
        live = pids(scraped)
        return (scraped, stats) if len(live) == WORKERS + 1 == len(stats) else None

    settled_at = wait_until(settled, 20, "one stats file for each live process")
    assert settled_at is not None
    final, _ = settled_at
    live = pids(final)
    assert served - live, "no worker was recycled"
    assert not (served - live) & pids(final, "sqlalchemy_pool_info")
    assert total(final, "pool_exporter_multiprocess_dead_workers_total") >= len(served - live)


@pytest.mark.slow
@pytest.mark.postgres
def test_recycled_gunicorn_workers_hand_on_their_worker_labels_and_totals_stay_exact(
    multiproc: Path, procs: Procs, pg_url: str, pg_app_name: str
) -> None:
    workers, lifetimes, per_life = 4, 40, 5
    recycle = ["--max-requests", str(per_life), "--max-requests-jitter", "0"]
    base = start_app(procs, "gunicorn", multiproc, pg_url, pg_app_name, *recycle, workers=workers)
    sidecar = start_sidecar(procs, multiproc)
    requests = lifetimes * per_life
    label_sets: set[tuple[tuple[str, str], ...]] = set()
    seen_pids: set[int] = set()
    served: set[int] = set()
    totals: list[float] = []
    with httpx.Client(timeout=20) as client:
        for _ in range(requests):
            served.add(int(client.get(base + "/query", params={"sleep": "0"}).text))
            samples = sidecar.scrape()  # after every request: no worker's series is missed
            in_use = select(samples, "sqlalchemy_pool_connections", state="in_use")
            label_sets |= {tuple(sorted(s[1].items())) for s in in_use}
            seen_pids |= pids(samples, INFO)
            totals.append(total(samples, "sqlalchemy_pool_checkouts_total", pool="app"))
    # Each worker served `per_life` requests at most; those still alive may have served fewer.
    assert len(served) >= lifetimes - workers
    assert len(seen_pids) >= lifetimes - workers  # with a pid label, as many label sets
    # The preloaded master (which instrumented the engine too) and the workers alive at once.
    assert len(label_sets) <= 2 * workers, sorted(label_sets)
    assert all(dict(labels).keys() == {"pool", "state", "worker"} for labels in label_sets)
    assert totals == sorted(totals), "the total went backwards"
    final = counted(sidecar, requests)
    for metric in ("checkout_wait_seconds_count", "connection_hold_seconds_count"):
        assert total(final, f"sqlalchemy_pool_{metric}", pool="app") == requests


def test_landing_page_links_to_the_metrics_and_health_endpoints_answer(
    tmp_path: Path, procs: Procs
) -> None:
    sidecar = start_sidecar(procs, tmp_path, "--web.telemetry-path=/pool-metrics")
    landing = sidecar.client.get(sidecar.url + "/")
    assert landing.status_code == 200
    assert 'href="/pool-metrics"' in landing.text
    assert sidecar.client.get(sidecar.url + "/-/healthy").status_code == 200
    assert sidecar.client.get(sidecar.url + "/-/ready").status_code == 200
    assert sidecar.client.get(sidecar.url + "/metrics").status_code == 404
    samples = sidecar.scrape("/pool-metrics")
    assert total(samples, "pool_exporter_multiprocess_up") == 1
    assert total(samples, "pool_exporter_multiprocess_files") == 0
    assert select(samples, "process_resident_memory_bytes")
    assert not select(samples, "pool_exporter_database_up")  # no URL given: not watched


def test_tls_and_basic_auth_refuse_a_scrape_without_credentials(
    tmp_path: Path, procs: Procs
) -> None:
    cert, key = self_signed(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret-scrape", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(
        yaml.safe_dump(
            {
                # relative paths are relative to the config file, as in exporter-toolkit
                "tls_server_config": {"cert_file": cert.name, "key_file": key.name},
                "basic_auth_users": {"prometheus": hashed.replace("$2b$", "$2y$")},
            }
        )
    )
    client = httpx.Client(verify=ssl.create_default_context(cafile=cert), timeout=10)
    sidecar = start_sidecar(
        procs, tmp_path, f"--web.config.file={config}", scheme="https", client=client
    )
    anonymous = client.get(sidecar.url + "/metrics")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Basic")
    assert client.get(sidecar.url + "/metrics", auth=("prometheus", "wrong")).status_code == 401
    assert client.get(sidecar.url + "/metrics", auth=("nobody", "s3cret-scrape")).status_code == 401
    for _ in range(2):  # the second one is answered from the verified-credentials cache
        ok = client.get(sidecar.url + "/metrics", auth=("prometheus", "s3cret-scrape"))
        assert ok.status_code == 200
        assert "pool_exporter_multiprocess_up 1.0" in ok.text
    garbage = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe").decode()}
    assert client.get(sidecar.url + "/metrics", headers=garbage).status_code == 401
    with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port gets no answer
        httpx.get(sidecar.url.replace("https", "http") + "/metrics", timeout=5)
    assert client.get(sidecar.url + "/metrics", auth=("prometheus", "s3cret-scrape")).is_success


def _bad_configs(tmp_path: Path) -> dict[str, str]:
    files = {
        "malformed": "tls_server_config: [unclosed\n",
        "unknown key": "basic_auth_user:\n  alice: $2b$04$abcdefghijklmnopqrstuu\n",
        "not a hash": "basic_auth_users:\n  alice: plaintext\n",
        "missing key": "tls_server_config:\n  cert_file: server.crt\n",
        "missing cert": "tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n",
    }
    out = {}
    for name, text in files.items():
        path = tmp_path / (name.replace(" ", "_") + ".yml")
        path.write_text(text)
        out[name] = str(path)
    out["unreadable"] = str(tmp_path / "does-not-exist.yml")
    return out


@pytest.mark.parametrize(
    "case",
    [
        "--web.listen-address=nonsense",
        "--web.listen-address=127.0.0.1:99999",
        "--web.telemetry-path=metrics",
        "--database-timeout=-1",
        "--database-max-applications=-1",
        "--database-max-applications=2.5",
        "--database-max-roles=-1",
        "--no-such-flag",
        "missing dir",
        "dir is a file",
        "malformed",
        "unknown key",
        "not a hash",
        "missing key",
        "missing cert",
        "unreadable",
    ],
)
def test_bad_configuration_is_one_error_line_and_exit_code_2(tmp_path: Path, case: str) -> None:
    directory = str(tmp_path)
    args: list[str] = []
    if case.startswith("--"):
        args.append(case)
    elif case == "missing dir":
        directory = str(tmp_path / "nope")
    elif case == "dir is a file":
        directory = str(tmp_path / "file")
        Path(directory).write_text("")
    else:
        args.append(f"--web.config.file={_bad_configs(tmp_path)[case]}")
    result = run("sidecar", f"--multiproc-dir={directory}", *args)
    assert result.returncode == 2, result
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_directory_is_named_in_the_error(tmp_path: Path) -> None:
    result = run("sidecar", f"--multiproc-dir={tmp_path}/nope")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: multiprocess directory {tmp_path}/nope does not exist or is not a directory"
    )


def test_an_unwritable_directory_is_refused() -> None:
    # The sidecar removes dead workers' files, so read-only access is a configuration error.
    directory = Path(tempfile.mkdtemp(prefix="pool-exporter-ro-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        # Root writes anywhere through CAP_DAC_OVERRIDE: the sidecar runs as root without it,
        # so the mode bits apply. Not as another user: that user may be unable to reach the
        # interpreter or the virtualenv (a checkout under /root, a 0700 `mktemp -d`).
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop CAP_DAC_OVERRIDE"
        prefix = [setpriv, "--bounding-set=-dac_override"]
    directory.chmod(0o555)
    try:
        result = subprocess.run(
            [*prefix, str(BIN / "pool-exporter"), "sidecar", f"--multiproc-dir={directory}"],
            check=False,
            capture_output=True,
            text=True,
            timeout=30,
        )
    finally:
        directory.chmod(0o700)
        shutil.rmtree(directory)
    assert result.returncode == 2, result
    assert result.stderr.strip() == (
        f"error: multiprocess directory {directory} is not readable and writable by this user "
        "(the sidecar removes the files of dead workers)"
    )


def test_deploy_examples_parse_and_point_at_the_shared_directory() -> None:
    deploy = ROOT / "deploy"
    documents = {
        path.name: list(yaml.safe_load_all(path.read_text()))
        for path in sorted(deploy.glob("*.yaml"))
    }
    kinds = {doc["kind"] for docs in documents.values() for doc in docs if doc and "kind" in doc}
    assert {"Deployment", "Service", "PodMonitor", "ServiceMonitor", "Secret"} <= kinds
    (deployment,) = [
        doc for docs in documents.values() for doc in docs if doc and doc["kind"] == "Deployment"
    ]
    pod = deployment["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    containers = {c["name"]: c for c in pod["containers"]}
    assert set(containers) == {"app", "pool-exporter"}
    mounts = {
        name: {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        for name, c in containers.items()
    }
    (shared,) = [name for name, v in volumes.items() if "emptyDir" in v]
    env = {name: {e["name"]: e for e in c.get("env", [])} for name, c in containers.items()}
    for name in containers:
        assert env[name]["PROMETHEUS_MULTIPROC_DIR"]["value"] == mounts[name][shared]
    secret = env["pool-exporter"]["POOL_EXPORTER_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert secret["name"]
    args = containers["pool-exporter"]["args"]
    assert args[0] == "sidecar"
    scrape = yaml.safe_load((deploy / "prometheus.yml").read_text())
    assert scrape["scrape_configs"]
    web = yaml.safe_load((deploy / "web-config.yml").read_text())
    assert set(web) == {"tls_server_config", "basic_auth_users"}


def _seconds(duration: str) -> float:
    assert duration.endswith("s") and not duration.endswith("ms"), duration
    return float(duration[:-1])


def test_deploy_examples_scrape_every_5_s_and_outwait_the_database_timeout() -> None:
    # The README advises 5 s or faster; a scrape timeout must fit in the interval and stay
    # above the sidecar's --database-timeout, so that a slow database reports up 0.
    deploy = ROOT / "deploy"
    documents = [d for d in yaml.safe_load_all((deploy / "kubernetes.yaml").read_text()) if d]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    containers = {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}
    (database_timeout,) = [
        float(a.split("=", 1)[1])
        for a in containers["pool-exporter"]["args"]
        if a.startswith("--database-timeout=")
    ]
    monitors = [d for d in yaml.safe_load_all((deploy / "monitoring.yaml").read_text()) if d]
    endpoints = [
        e
        for m in monitors
        for e in m["spec"].get("podMetricsEndpoints", []) + m["spec"].get("endpoints", [])
    ]
    pairs = [(e["interval"], e["scrapeTimeout"]) for e in endpoints]
    prometheus = yaml.safe_load((deploy / "prometheus.yml").read_text())
    defaults = prometheus["global"]
    assert _seconds(defaults["evaluation_interval"]) <= 5
    pairs += [
        (
            job.get("scrape_interval", defaults["scrape_interval"]),
            job.get("scrape_timeout", defaults["scrape_timeout"]),
        )
        for job in prometheus["scrape_configs"]
    ]
    assert len(pairs) == 4
    for interval, timeout in pairs:
        assert _seconds(interval) <= 5
        assert database_timeout < _seconds(timeout) <= _seconds(interval)
    promtool = require_binary("promtool")
    check = [promtool, "check", "config", "--syntax-only", str(deploy / "prometheus.yml")]
    result = subprocess.run(check, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
