"""`pool-exporter replay`: a burst of virtual users against an instrumented pool.

The scenario (`scenario.py`), the runner that plays it against a real pool (`runner.py`), the
summary in the incident report's words (`summary.py`) and the command (`command.py`). In
Python: `replay(Scenario(...), PoolSettings(...))` returns a `Result`
(`pool_exporter.incident.results`).
"""

from pool_exporter.incident.holds import HoldTime
from pool_exporter.incident.results import Result, Sample

from .command import configure, run, scenario_from, write_json
from .runner import OK, DatabaseUnavailable, Replay, pool_engine, probe, replay
from .scenario import PoolSettings, Scenario
from .summary import summary

__all__ = [
    "OK",
    "DatabaseUnavailable",
    "HoldTime",
    "PoolSettings",
    "Replay",
    "Result",
    "Sample",
    "Scenario",
    "configure",
    "pool_engine",
    "probe",
    "replay",
    "run",
    "scenario_from",
    "summary",
    "write_json",
]
