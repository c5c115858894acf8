"""The one config the rules, their routing and the dashboard are generated from, and reading a
user's overrides."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pool_exporter.durations import is_duration

from .data_files import DASHBOARD_FILE

# docs/runbooks.md in the project's repository: pyproject.toml's [project.urls] Runbooks, the
# address PyPI lists. Each alert links to its section, `runbook_url#<alert name in lowercase>`.
DEFAULT_RUNBOOK_URL = "https://github.com/pool-exporter/pool-exporter/blob/main/docs/runbooks.md"

# One label matcher as PromQL writes it: name, operator, double-quoted value.
_MATCHER = r'\s*[A-Za-z_]\w*\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"\s*'
_SELECTOR = re.compile(rf"^(?:{_MATCHER}(?:,{_MATCHER})*)?,?$")


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message says which and why."""


_LABEL = re.compile(r"[A-Za-z_]\w*")


@dataclass(frozen=True)
class MixinConfig:
    """Selectors, the cluster label, thresholds, `for` durations, severities, the runbook
    address and the dashboard's identity: one object for the rules, the routing and the
    dashboard, so that a selector or a threshold moves all three together.

    Ratios are 0-1. The dashboard draws its threshold bands at `utilisation_warning` and
    `fleet_share`, where the rules fire.
    """

    # Extra label matchers for every pool series, e.g. 'job="shop"'; and for the sidecar's
    # database series. The rules and every dashboard query carry them alike.
    selector: str = ""
    database_selector: str = ""
    # The label that names a cluster where one Prometheus (or a Thanos/Mimir ruler) sees
    # several, e.g. "cluster". Set, every aggregation of the rules keeps it, the alerts name it,
    # the routing groups by it and the dashboard gets a variable for it. Empty: one cluster.
    cluster_label: str = ""
    # Labels that the pools' series and the sidecar's database series share and that name
    # one database's fleet of clients. Every sidecar of a job reports the same server.
    fleet_labels: tuple[str, ...] = ("job",)
    # rate() and averaging window: at least 4 scrape intervals.
    rate_window: str = "1m"
    # Errors and invalidations are rarer; a longer window counts them more steadily.
    error_window: str = "5m"

    # -- one pool in one worker ------------------------------------------------------------
    utilisation_warning: float = 0.8
    nearly_full_for: str = "2m"
    # Exhausted: the callers queued now need this long to be served, at the recent hold time.
    queue_warning_seconds: float = 1.0
    # Page: the queue (or the observed p99 wait) reaches this share of the pool timeout.
    queue_page_share: float = 0.5
    wait_page_share: float = 0.5
    # "1s" keeps a page pending for one evaluation: it fires at the second consecutive
    # evaluation that shows the condition, whatever the interval (1 s or more).
    page_for: str = "1s"
    # Page at the first evaluation, with no `for`: a queue that needs the whole pool timeout
    # (1) to drain cannot be served before its last callers time out, so one scrape is proof
    # enough. At a 15 s interval the second evaluation may come after the first timeout.
    queue_timeout_share: float = 1.0
    waiting_for: str = "1m"
    # Headroom: the busiest `rate_window` average in this window.
    headroom_window: str = "6h"
    headroom_threshold: float = 0.9
    connect_error_share: float = 0.1
    connect_errors_for: str = "1m"
    # An invalidation storm: this share of the instance's pool capacity invalidated within
    # `error_window`.
    invalidation_share: float = 0.5
    # Overflow churn: overflow connections opened for bursts and closed when they come back
    # to a full pool, faster than this many a second (over `error_window`), for
    # `overflow_churn_for`. Each is a new database connection: pool_size is below the load.
    overflow_churn_per_second: float = 0.5
    overflow_churn_for: str = "10m"
    # Long checkouts: a connection held longer than this share of the pool timeout (or than
    # long_checkout_seconds where the pool has no timeout), continuously for long_checkout_for.
    long_checkout_timeout_share: float = 1.0
    long_checkout_seconds: float = 300.0
    long_checkout_for: str = "2m"

    # -- fleet and database ----------------------------------------------------------------
    fleet_share: float = 1.0
    # Long enough to ride out a rolling deploy, which runs old and new workers side by side.
    fleet_for: str = "15m"
    database_warning: float = 0.8
    database_critical: float = 0.95
    database_warning_for: str = "5m"
    database_critical_for: str = "1m"
    database_down_for: str = "2m"
    absent_lookback: str = "1h"
    absent_for: str = "10m"

    # -- what the database is stuck on ---------------------------------------------------------
    # A session idle in a transaction keeps its locks, keeps vacuum from removing the rows its
    # snapshot can see, and holds a connection of its pool: a warning once one has been idle
    # this long, for `idle_in_transaction_for`.
    idle_in_transaction_seconds: float = 60.0
    idle_in_transaction_for: str = "1m"
    # A role's or a database's CONNECTION LIMIT refuses its connections before max_connections
    # does: a warning at this share of the limit in use.
    connection_limit_warning: float = 0.8
    connection_limit_for: str = "5m"

    # -- PgBouncer between the pools and the database ----------------------------------------
    # Extra label matchers for the sidecar's pool_exporter_pgbouncer_* series.
    pgbouncer_selector: str = ""
    # Clients queued in the pooler: a warning once the oldest has waited this long with the
    # pool's server connections all taken (a transaction-mode queue normally drains in
    # milliseconds), a page once it has waited this share of the applications' pool timeout.
    pooler_wait_warning_seconds: float = 1.0
    pooler_wait_page_share: float = 0.5
    # Client connections (SHOW LISTS used_clients) near max_client_conn.
    pooler_clients_warning: float = 0.9
    pooler_clients_for: str = "2m"

    # -- routing and docs ------------------------------------------------------------------
    severity_page: str = "critical"
    severity_warning: str = "warning"
    severity_ticket: str = "info"
    # Where the runbooks live: set once to your own copy (`pool-exporter alerts show
    # runbooks.md`), so that the links work inside your network and match your version.
    runbook_url: str = DEFAULT_RUNBOOK_URL
    prometheusrule_name: str = "pool-exporter"

    # -- the dashboard -----------------------------------------------------------------------
    dashboard_uid: str = "pool-exporter"
    dashboard_title: str = "SQLAlchemy connection pools"
    dashboard_refresh: str = "30s"
    dashboard_time_from: str = "now-3h"
    dashboard_tags: tuple[str, ...] = ("pool-exporter", "sqlalchemy", "connection-pool")
    dashboard_file: str = DASHBOARD_FILE

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith(("_for", "_window", "_lookback")) and not is_duration(value):
                raise ConfigError(f"{f.name}: {value!r} is not a Prometheus duration like 30s")
            if f.type == "float" and not value > 0:
                raise ConfigError(f"{f.name}: must be above 0, not {value!r}")
        for name in ("selector", "database_selector", "pgbouncer_selector"):
            if not _SELECTOR.match(getattr(self, name)):
                value = getattr(self, name)
                raise ConfigError(f'{name}: {value!r} is not a list of matchers like job="shop"')
        if not self.fleet_labels or not all(_LABEL.fullmatch(x) for x in self.fleet_labels):
            raise ConfigError(f"fleet_labels: {self.fleet_labels!r} must be label names")
        if self.cluster_label and not _LABEL.fullmatch(self.cluster_label):
            raise ConfigError(f"cluster_label: {self.cluster_label!r} is not a label name")
        if not re.fullmatch(r"[\w.-]+\.json", self.dashboard_file):
            raise ConfigError(f"dashboard_file: {self.dashboard_file!r} is not a .json file name")
        for name in ("utilisation_warning", "connection_limit_warning"):
            if getattr(self, name) > 1:
                raise ConfigError(f"{name}: a share of capacity, at most 1")

    def cluster_beside(self, names: Sequence[str]) -> tuple[str, ...]:
        """The cluster label, when there is one and `names` lack it; else nothing. The one
        place that decides where the cluster goes: first, and once."""
        label = self.cluster_label
        return (label,) if label and label not in names else ()

    def with_cluster(self, *names: str) -> tuple[str, ...]:
        """`names` with the cluster label first (`cluster_beside`): what an aggregation, a
        record's level and an Alertmanager group keep, so that two clusters never add up."""
        return (*self.cluster_beside(names), *names)


def _coerce(name: str, kind: str, value: Any) -> Any:
    """A JSON/YAML value as the field's type; bool is no number and a number no string."""
    if kind == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "str" and isinstance(value, str):
        return value
    if (
        kind == "tuple[str, ...]"
        and isinstance(value, list)
        and all(isinstance(v, str) for v in value)
    ):
        return tuple(value)
    wanted = {"float": "a number", "str": "a string", "tuple[str, ...]": "a list of strings"}
    raise ConfigError(f"{name}: expected {wanted.get(kind, kind)}, got {value!r}")


# The name the rules' settings had before the dashboard's joined them, for existing imports.
AlertConfig = MixinConfig


def from_mapping(overrides: dict[str, Any], base: MixinConfig | None = None) -> MixinConfig:
    """`base` (the defaults) with `overrides` applied; unknown keys are an error."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(MixinConfig)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise ConfigError(f"unknown setting {', '.join(unknown)} (known: {', '.join(fields)})")
    values = {k: _coerce(k, fields[k], v) for k, v in overrides.items()}
    return dataclasses.replace(base or MixinConfig(), **values)


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _parse(path: Path, text: str) -> Any:
    """A JSON file needs no PyYAML; a YAML one does (the `alerts` and `dashboards` extras)."""
    if path.suffix == ".json":
        try:
            return json.loads(text)
        except ValueError as exc:
            raise ConfigError(f"{path}: not valid JSON: {_one_line(exc)}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{getattr(exc, 'problem', '')} at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML: {where or _one_line(exc)}") from None


def load(path: Path) -> MixinConfig:
    """The defaults with the overrides of a YAML or JSON file (a mapping of settings)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    data = _parse(path, text)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {type(data).__name__}")
    try:
        return from_mapping(data)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    """`--config FILE`: the one settings file the rules and the dashboards are generated from."""
    parser.add_argument(
        "--config",
        type=Path,
        help="YAML or JSON file of settings overriding the defaults, the same for the rules and "
        "the dashboard (see docs/alerts.md)",
    )


def from_args(args: argparse.Namespace) -> MixinConfig:
    """The config `--config` names, or the defaults."""
    return load(args.config) if args.config else MixinConfig()
