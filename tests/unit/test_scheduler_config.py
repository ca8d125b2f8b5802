"""The scheduler's process configuration: defaults, environment variables, flags."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from scheduler.domain.rate_limits import DEFAULT_RATE, RateLimit
from scheduler.flags import build_parser, parse_args, settings_from
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


def test_limit_flags_reach_the_server_settings() -> None:
    settings = settings_from(
        parse_args(
            [
                "--max-concurrent-rpcs", "50",
                "--max-streams", "200",
                "--max-connection-age", "600",
                "--retention-days", "7",
                "--max-releases", "3",
            ]
        )
    )  # fmt: skip
    assert (settings.max_concurrent_rpcs, settings.max_streams) == (50, 200)
    assert settings.max_connection_age == timedelta(minutes=10)
    assert settings.retention == timedelta(days=7)
    assert settings.max_releases == 3
    # 0: connections never age; retention 0 keeps finished jobs forever.
    kept = settings_from(parse_args(["--max-connection-age", "0", "--retention-days", "0"]))
    assert kept.max_connection_age is None
    assert kept.retention == timedelta(0)


def test_the_audit_retention_flag_reaches_the_server_settings() -> None:
    assert ServerSettings().audit_retention == timedelta(days=90)
    assert settings_from(parse_args(["--audit-retention-days", "7"])).audit_retention == timedelta(
        days=7
    )
    # 0 keeps audit events forever; beyond 36,500 days the sweep's cutoff would not exist.
    assert settings_from(parse_args(["--audit-retention-days", "0"])).audit_retention == timedelta(
        0
    )
    with pytest.raises(ValueError, match="audit_retention"):
        settings_from(parse_args(["--audit-retention-days", "40000"]))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--max-concurrent-rpcs", "0"], "--max-concurrent-rpcs: '0' is not a whole number"),
        (["--max-streams", "many"], "--max-streams: 'many' is not a whole number"),
        (
            ["--max-connection-age", "-1"],
            "--max-connection-age: '-1' is not a number of at least 0",
        ),
        (["--retention-days", "nan"], "--retention-days: 'nan' is not a number of at least 0"),
        (
            ["--audit-retention-days", "-1"],
            "--audit-retention-days: '-1' is not a number of at least 0",
        ),
        (["--log-level", "loud"], "--log-level: invalid choice: 'LOUD'"),
    ],
)
def test_bad_limits_are_refused_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_the_log_level_is_case_insensitive() -> None:
    assert parse_args(["--log-level", "debug"]).log_level == "DEBUG"


def test_auth_flags_and_the_loopback_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from scheduler.flags import exposure_problem, is_loopback

    assert settings_from(parse_args([])).auth == "off"
    monkeypatch.setenv("JOBSCHED_AUTH", "required")
    assert settings_from(parse_args([])).auth == "required"
    assert settings_from(parse_args(["--auth", "off"])).auth == "off"
    for listen in ("127.0.0.1:1", "127.8.0.1:1", "localhost:1", "[::1]:1"):
        assert is_loopback(listen), listen
    for listen in ("0.0.0.0:1", "[::]:1", "10.0.0.1:1", "jobsched:1", ":50051"):
        assert not is_loopback(listen), listen
    off = settings_from(parse_args(["--auth", "off", "--listen", "0.0.0.0:1"]))
    assert exposure_problem(off, insecure=False) is not None
    assert exposure_problem(off, insecure=True) is None
    on = settings_from(parse_args(["--auth", "required", "--listen", "0.0.0.0:1"]))
    assert exposure_problem(on, insecure=False) is None


def test_the_bootstrap_key_comes_from_the_environment_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from scheduler.domain.auth import new_key

    key = new_key()
    monkeypatch.setenv("JOBSCHED_BOOTSTRAP_KEY", key)
    settings = settings_from(parse_args([]))
    assert settings.bootstrap_key == key
    assert key not in repr(settings)
    monkeypatch.setenv("JOBSCHED_BOOTSTRAP_KEY", "not-a-key")
    with pytest.raises(ValueError, match="JOBSCHED_BOOTSTRAP_KEY is not an API key"):
        settings_from(parse_args([]))


def test_rate_limits_come_from_flags_environment_and_the_config_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "jobsched.toml"
    config.write_text(
        '[scheduler]\nrate_limits = ["viewer=5/10"]\ntenant_rate_limits = ["acme=1"]\n'
        'stream_limits = ["viewer=3"]\n'
    )
    policy = settings_from(parse_args(["--config", str(config)])).rate_limits
    assert policy.rate_for("viewer", None) == ("", RateLimit(5, 10))
    assert policy.rate_for("viewer", "acme") == ("acme", RateLimit(1, 2))
    assert policy.streams_for("viewer") == 3
    assert policy.rate_for("admin", None) == ("", DEFAULT_RATE)
    # The environment over the file (comma-separated), the flags over both.
    monkeypatch.setenv("JOBSCHED_RATE_LIMITS", "viewer=7,admin=off")
    policy = settings_from(parse_args(["--config", str(config)])).rate_limits
    assert policy.rate_for("viewer", None) == ("", RateLimit(7, 14))
    assert policy.rate_for("admin", None) == ("", None)
    args = parse_args(["--config", str(config), "--rate-limit", "viewer=9/9"])
    assert settings_from(args).rate_limits.rate_for("viewer", None) == ("", RateLimit(9, 9))
    assert settings_from(args).rate_limits.rate_for("admin", None) == ("", DEFAULT_RATE)


@pytest.mark.parametrize(
    "argv",
    [
        ["--rate-limit", "root=5"],
        ["--rate-limit", "viewer=fast"],
        ["--tenant-rate-limit", "acme"],
        ["--stream-limit", "viewer=0"],
    ],
)
def test_bad_rate_limits_are_refused_at_the_command_line(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_the_test_only_cron_clock_offset_is_off_by_default_and_hidden() -> None:
    assert settings_from(parse_args([])).test_cron_clock_offset == 0.0
    shifted = settings_from(parse_args(["--test-cron-clock-offset", "-42.5"]))
    assert shifted.test_cron_clock_offset == -42.5
    assert "test-cron-clock-offset" not in build_parser().format_help()
