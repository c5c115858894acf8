"""Prometheus durations: the one parser agrees with Prometheus on what is one and how long."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from pool_exporter.durations import is_duration, seconds, text
from pool_exporter.mixin.config import ConfigError, MixinConfig

VALID = {
    "0": 0.0,
    "30s": 30.0,
    "500ms": 0.5,
    "15m": 900.0,
    "1h30m": 5400.0,
    "1m30s": 90.0,
    "2d12h": 216000.0,
    "1w": 604800.0,
    "1y": 365 * 86400.0,
    "1h0m5s250ms": 3605.25,
    "90s": 90.0,
}
INVALID = ("", "5 minutes", "1m1h", "30s30s", "1.5h", "h", "-1s", "30", "1H", "1s 2ms")


@pytest.mark.parametrize(("duration", "expected"), VALID.items())
def test_a_prometheus_duration_is_read_in_seconds(duration: str, expected: float) -> None:
    assert is_duration(duration)
    assert seconds(duration) == pytest.approx(expected)


@pytest.mark.parametrize("duration", INVALID)
def test_what_prometheus_refuses_is_refused_with_the_text_named(duration: str) -> None:
    assert not is_duration(duration)
    with pytest.raises(ValueError, match=f"{duration!r} is not a Prometheus duration"):
        seconds(duration)


@pytest.mark.parametrize("duration", [*VALID, *INVALID])
def test_promtool_agrees_on_which_texts_are_durations(
    duration: str, promtool: str, tmp_path: Path
) -> None:
    rules = {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": "1", "for": duration}]}]}
    path = tmp_path / "rules.yml"
    path.write_text(json.dumps(rules))
    check = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert (check.returncode == 0) == is_duration(duration), check.stdout + check.stderr


@pytest.mark.parametrize(("value", "expected"), [(1, "1s"), (90, "90s"), (0.5, "500ms")])
def test_seconds_are_written_as_a_duration_that_reads_back(value: float, expected: str) -> None:
    assert text(value) == expected
    assert seconds(expected) == value


def test_alert_config_takes_combined_durations_and_refuses_misordered_ones() -> None:
    assert MixinConfig(page_for="1m30s").page_for == "1m30s"
    with pytest.raises(ConfigError, match="page_for: '30s1m' is not a Prometheus duration"):
        MixinConfig(page_for="30s1m")
