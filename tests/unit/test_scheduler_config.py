"""The scheduler's process configuration: defaults, environment variables, flags."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.__main__ import parse_args, settings_from
from scheduler.server import ServerSettings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("JOBSCHED_LISTEN", "DATABASE_URL", "JOBSCHED_DATA_DIR", "JOBSCHED_LOG_LEVEL"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    args = parse_args([])
    assert args.listen == "127.0.0.1:50051"
    assert args.database_url is None  # embedded PostgreSQL
    assert args.data_dir == Path(".jobsched")
    assert not args.no_migrate


def test_environment_overrides_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSCHED_LISTEN", "0.0.0.0:6000")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("JOBSCHED_DATA_DIR", "/var/lib/jobsched")
    args = parse_args([])
    assert args.listen == "0.0.0.0:6000"
    assert args.database_url == "postgresql://u@h/db"
    assert args.data_dir == Path("/var/lib/jobsched")


def test_flags_override_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSCHED_LISTEN", "0.0.0.0:6000")
    args = parse_args(["--listen", "127.0.0.1:7000", "--no-migrate"])
    assert args.listen == "127.0.0.1:7000"
    assert args.no_migrate


def test_timing_flags_reach_the_server_settings() -> None:
    settings = settings_from(
        parse_args(["--lease", "2.5", "--leader-tick", "0.2", "--reconnect-grace", "0"])
    )
    assert settings.lease == timedelta(seconds=2.5)
    assert settings.leader_tick == 0.2
    assert settings.reconnect_grace == timedelta(0)
    assert settings_from(parse_args([])) == ServerSettings()
