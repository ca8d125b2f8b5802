"""The executor's command line: defaults, environment variables, flags replacing them."""

from __future__ import annotations

import os
import socket

import pytest

from executor.flags import parse_args
from jobsched.client import DEFAULT_ADDRESS


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("JOBSCHED_"):
            monkeypatch.delenv(name)


def test_defaults() -> None:
    args = parse_args([])
    assert args.schedulers == [DEFAULT_ADDRESS]
    assert args.name == f"{socket.gethostname()}:{os.getpid()}"
    assert (args.capacity, args.queues, args.grace, args.log_level) == (10, [], 30.0, "INFO")


def test_environment_then_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSCHED_ADDRESS", "a:1, b:2")
    monkeypatch.setenv("JOBSCHED_EXECUTOR_NAME", "pod-7")
    monkeypatch.setenv("JOBSCHED_CAPACITY", "4")
    monkeypatch.setenv("JOBSCHED_QUEUES", "emails,video")
    args = parse_args([])
    assert args.schedulers == ["a:1", "b:2"]
    assert (args.name, args.capacity, args.queues) == ("pod-7", 4, ["emails", "video"])
    flagged = parse_args(["--scheduler", "c:3", "--queue", "reports", "--capacity", "2"])
    assert flagged.schedulers == ["c:3"]  # the flags replace the variable's list
    assert (flagged.queues, flagged.capacity) == (["reports"], 2)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--capacity", "0"], "--capacity: '0' is not a whole number of at least 1"),
        (["--grace", "-5"], "--grace: '-5' is not a number of seconds"),
    ],
)
def test_bad_values_are_refused_naming_the_flag(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse_args(argv)
    assert exit_.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_environment_value_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBSCHED_CAPACITY", "lots")
    with pytest.raises(SystemExit):
        parse_args([])
    assert "JOBSCHED_CAPACITY = 'lots'" in capsys.readouterr().err
