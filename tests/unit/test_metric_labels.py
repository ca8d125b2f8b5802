"""Bounded metric labels and the metrics options: queue and type values past the limit fold into
`other`; --metrics-listen is off by default and checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.flags import parse_args, settings_from
from scheduler.server import ServerSettings
from scheduler.telemetry.labels import OTHER, BoundedValues


def test_values_past_the_limit_fold_into_other() -> None:
    label = BoundedValues(2)
    assert [label(v) for v in ("a", "b", "c", "a", "d", "b")] == ["a", "b", OTHER, "a", OTHER, "b"]


def test_a_limit_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        BoundedValues(0)


def test_metrics_are_off_by_default_and_on_with_the_flag() -> None:
    assert settings_from(parse_args([])).metrics_listen is None
    settings = settings_from(
        parse_args(["--metrics-listen", "127.0.0.1:9464", "--queue-depth-interval", "30"])
    )
    assert (settings.metrics_listen, settings.queue_depth_interval) == ("127.0.0.1:9464", 30.0)


def test_the_environment_sets_the_metrics_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSCHED_METRICS_LISTEN", "0.0.0.0:9464")
    assert settings_from(parse_args([])).metrics_listen == "0.0.0.0:9464"


@pytest.mark.parametrize("listen", ["9464", "host:", "host:port", "host:70000"])
def test_a_metrics_address_without_a_port_is_refused(listen: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        ServerSettings(metrics_listen=listen)


def test_a_queue_depth_interval_of_zero_is_refused() -> None:
    with pytest.raises(SystemExit):
        parse_args(["--queue-depth-interval", "0"])
    with pytest.raises(ValueError, match="positive"):
        ServerSettings(queue_depth_interval=0)


def test_the_config_file_sets_the_metrics_address(tmp_path: Path) -> None:
    config = tmp_path / "jobsched.toml"
    config.write_text('[scheduler]\nmetrics_listen = "127.0.0.1:9999"\n')
    assert settings_from(parse_args(["--config", str(config)])).metrics_listen == "127.0.0.1:9999"
