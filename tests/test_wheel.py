"""The installed package is the product: the wheel, installed into fresh virtualenvs outside the
checkout (without extras, and with all of them), run from an empty directory."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pool_exporter.incident.promserver import free_port

from .support.binaries import require_binary

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A short push that saturates the demo's pool (5 + 10) at once: 200 users, 1 s pool timeout.
SHORT_DEMO = ("demo", "--duration", "8", "--users", "200", "--pool-timeout", "1")


def _pip(python: Path, *args: str) -> None:
    result = subprocess.run(
        [str(python), "-m", "pip", *args, "--quiet", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    _pip(Path(sys.executable), "wheel", "--no-deps", "--wheel-dir", str(out), str(ROOT))
    (built,) = out.glob("pool_exporter-*.whl")
    return built


@dataclass(frozen=True)
class Installed:
    """A virtualenv holding the wheel, and an empty directory to run its commands in."""

    venv: Path
    cwd: Path

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = self.execute(str(self.venv / "bin" / "pool-exporter"), *args, timeout=timeout)
        assert "Traceback" not in result.stdout + result.stderr, result
        return result

    def python(self, code: str) -> subprocess.CompletedProcess[str]:
        """`code` run by the virtualenv's Python, from the empty directory."""
        return self.execute(str(self.venv / "bin" / "python"), "-c", code, timeout=120)

    def execute(self, *argv: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "PYTHONSAFEPATH"}
        }
        env.update(
            PATH=f"{self.venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            POOL_EXPORTER_DATABASE_URL="",
            DATABASE_URL="",
        )
        return subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            cwd=self.cwd,
            env=env,
            timeout=timeout,
            check=False,
        )

    def demo(self) -> subprocess.CompletedProcess[str]:
        return self.run(
            *SHORT_DEMO,
            *("--port", str(free_port()), "--json", "demo.json", "--out", "demo.png"),
            timeout=180,
        )


def _install(factory: pytest.TempPathFactory, requirement: str, name: str) -> Iterator[Installed]:
    venv = factory.mktemp(name) / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    _pip(venv / "bin" / "python", "install", requirement)
    cwd = factory.mktemp(f"{name}-cwd")
    yield Installed(venv, cwd)


@pytest.fixture(scope="module")
def bare(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Installed]:
    yield from _install(tmp_path_factory, str(wheel), "bare")


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> Iterator[Installed]:
    yield from _install(tmp_path_factory, f"{wheel}[all]", "full")


def _one_error_line(result: subprocess.CompletedProcess[str], extra: str) -> None:
    assert result.returncode == 2, result
    [line] = result.stderr.splitlines()
    assert line.startswith("error: ") and f"pip install 'pool-exporter[{extra}]'" in line, line


# -- the wheel ------------------------------------------------------------------------------


def test_the_wheel_holds_the_package_and_the_committed_rules_dashboards_and_runbooks(
    wheel: Path,
) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {
        f"pool_exporter/data/{path.relative_to(ROOT)}"
        for path in [
            *(ROOT / "alerts").glob("*.y*ml"),
            *(ROOT / "dashboards").glob("*.json"),
            ROOT / "docs" / "runbooks.md",
        ]
    }
    assert len(shipped) >= 5 and shipped <= names
    packaged = {n for n in names if ".dist-info/" not in n}
    assert "pool_exporter/py.typed" in packaged
    # only what users run: no tests, promtool cases, benchmarks or CI
    assert all(n.startswith("pool_exporter/") for n in packaged), packaged
    assert not [n for n in packaged if "/tests/" in n or n.endswith(".test.yml")]
    for path in (ROOT / "pool_exporter").rglob("*.py"):
        assert str(path.relative_to(ROOT)) in packaged, path


# -- without extras -------------------------------------------------------------------------


def test_version_names_the_installed_release(bare: Installed) -> None:
    result = bare.run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"pool-exporter {PROJECT['version']}"


def test_without_extras_show_prints_the_shipped_files(bare: Installed) -> None:
    for args, committed in [
        (("alerts", "show"), "alerts/pool-exporter.rules.yml"),
        (("alerts", "show", "prometheusrule.yaml"), "alerts/prometheusrule.yaml"),
        (("alerts", "show", "runbooks.md"), "docs/runbooks.md"),
        (("dashboards", "show"), "dashboards/pool-exporter.json"),
    ]:
        result = bare.run(*args)
        assert result.returncode == 0, result
        assert result.stdout == (ROOT / committed).read_text(), args


def test_without_extras_generating_names_the_extra(bare: Installed) -> None:
    _one_error_line(bare.run("alerts", "generate", "--out-dir", "out"), "alerts")
    _one_error_line(bare.run("dashboards", "generate", "--out-dir", "out"), "dashboards")
    assert not (bare.cwd / "out").exists()


def test_without_extras_the_sidecar_offers_its_help(bare: Installed) -> None:
    result = bare.run("sidecar", "--help")
    assert result.returncode == 0 and "--multiproc-dir" in result.stdout


def test_without_the_demo_extra_the_demo_fires_the_shipped_alerts_and_keeps_its_summary(
    bare: Installed,
) -> None:
    require_binary("prometheus")
    result = bare.demo()
    _one_error_line(result, "demo")
    out = result.stdout
    assert "timeline: matplotlib is not installed" in out
    assert "/site-packages/pool_exporter/data/alerts/pool-exporter.rules.yml" in out
    assert "requests        " in out and "timeouts        " in out
    assert "SQLAlchemyPoolQueueExceedsTimeout (critical) fired" in out, out
    assert (bare.cwd / "demo.json").stat().st_size > 0
    assert not (bare.cwd / "demo.png").exists()


def test_without_extras_nothing_imports_opentelemetry_and_otel_names_its_extra(
    bare: Installed,
) -> None:
    result = bare.python(
        "import sys, pool_exporter, pool_exporter.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'opentelemetry'))"
    )
    assert result.returncode == 0 and result.stdout.strip() == "[]", result
    result = bare.python("import pool_exporter.otel")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "ImportError: pool_exporter.otel needs OpenTelemetry's API: "
        "pip install 'pool-exporter[otel]'"
    )


# -- with every extra -----------------------------------------------------------------------


def test_with_every_extra_the_demo_fires_the_shipped_alerts_and_writes_its_png(
    full: Installed,
) -> None:
    require_binary("prometheus")
    result = full.demo()
    assert result.returncode == 0, result
    assert result.stderr == ""
    out = result.stdout
    assert "/site-packages/pool_exporter/data/alerts/pool-exporter.rules.yml" in out
    assert "SQLAlchemyPoolQueueExceedsTimeout (critical) fired" in out, out
    assert "SQLAlchemyPoolExhausted (warning) fired" in out, out
    assert "timeline        demo.png" in out
    png = (full.cwd / "demo.png").read_bytes()
    assert png.startswith(PNG_SIGNATURE) and len(png) > 10_000


def test_with_every_extra_generating_writes_what_the_checkout_commits(full: Installed) -> None:
    assert full.run("alerts", "generate", "--out-dir", "alerts").returncode == 0
    assert full.run("dashboards", "generate", "--out-dir", "dashboards").returncode == 0
    written = {
        p.relative_to(full.cwd)
        for directory in ("alerts", "dashboards")
        for p in (full.cwd / directory).iterdir()
    }
    committed = {
        p.relative_to(ROOT) for p in [*ROOT.glob("alerts/*.y*ml"), *ROOT.glob("dashboards/*")]
    }
    assert written == committed
    for path in written:
        assert (full.cwd / path).read_text() == (ROOT / path).read_text(), path
    assert full.run("sidecar", "--help").returncode == 0


# The otel extra is the API alone; instruments made before the application installs an SDK
# forward to it (tests/test_otel.py checks that with the SDK).
OTEL_API_ONLY = """
import importlib.util, tempfile
import sqlalchemy as sa
import pool_exporter
from pool_exporter import otel
engine = sa.create_engine(f"sqlite:///{tempfile.mkdtemp()}/w.db")
pool_exporter.instrument(engine, name="wheel")
enabled = otel.enable()
print(importlib.util.find_spec("opentelemetry.sdk") is None, sorted(enabled.instruments))
"""


def test_with_every_extra_otel_enable_works_on_the_api_alone(full: Installed) -> None:
    result = full.python(OTEL_API_ONLY)
    assert result.returncode == 0, result
    no_sdk, names = result.stdout.strip().split(" ", 1)
    assert no_sdk == "True"
    assert "'db.client.connection.count'" in names and "'db.client.connection.timeouts'" in names
