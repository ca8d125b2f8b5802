"""The executor's options for command jobs (executor/command_options.py): defaults, environment
variables, flags replacing them, bad values refused naming the flag."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from executor.command import DEFAULT_ENV_ALLOW, CommandSettings
from executor.command_options import command_settings
from executor.flags import parse_args
from executor.processes import Limits


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("JOBSCHED_"):
            monkeypatch.delenv(name)


def test_secure_defaults() -> None:
    settings = command_settings(parse_args([]))
    assert settings == CommandSettings()
    assert settings.allow == ()  # no commands
    assert settings.env_allow == DEFAULT_ENV_ALLOW


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSCHED_ALLOW_COMMAND", "/usr/bin/*, /opt/tools/*")
    monkeypatch.setenv("JOBSCHED_ENV_ALLOW", "PATH,AWS_REGION")
    monkeypatch.setenv("JOBSCHED_KEEP_WORK_DIRS", "true")
    monkeypatch.setenv("JOBSCHED_MAX_OUTPUT", "64K")
    monkeypatch.setenv("JOBSCHED_LIMIT_MEMORY", "2G")
    settings = command_settings(parse_args([]))
    assert settings.allow == ("/usr/bin/*", "/opt/tools/*")
    assert settings.env_allow == ("PATH", "AWS_REGION")
    assert settings.keep_work_dirs
    assert settings.max_output == 64 * 1024
    assert settings.limits == Limits(memory=2 << 30)
    flagged = command_settings(
        parse_args(
            [
                "--allow-command",
                "/bin/sh",
                "--env-allow",
                "LANG",
                "--work-dir",
                "/srv/work",
                "--kill-grace",
                "0.5",
                "--limit-cpu",
                "60",
                "--limit-files",
                "256",
            ]
        )
    )
    assert flagged.allow == ("/bin/sh",)  # the flags replace the variable's list
    assert flagged.env_allow == ("LANG",)
    assert (flagged.work_dir, flagged.kill_grace) == (Path("/srv/work"), 0.5)
    assert flagged.limits == Limits(cpu=60, memory=2 << 30, files=256)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--allow-command", "python3"], "--allow-command: 'python3' is not a glob of absolute"),
        (["--max-output", "lots"], "--max-output: 'lots' is not a size in bytes"),
        (["--max-output", "0"], "--max-output: '0' is not a size in bytes"),
        (["--kill-grace", "inf"], "--kill-grace: 'inf' is not a number of seconds"),
        (["--limit-files", "-1"], "--limit-files: '-1' is not a whole number of at least 1"),
        (["--env-allow", "A=B"], "--env-allow: 'A=B' is not an environment variable name"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(argv)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
