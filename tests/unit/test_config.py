"""jobsched.config: flag > environment > file > default, and the file's validation."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from jobsched.config import add_config_option, config_path, redact, resolve

ENV = {"listen": "X_LISTEN", "queues": "X_QUEUES", "verbose": "X_VERBOSE"}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="executor")
    add_config_option(p)
    p.add_argument("--listen", default="127.0.0.1:1")
    p.add_argument("--lease", type=float, default=30.0)
    p.add_argument("--capacity", type=int, default=10)
    p.add_argument("--queue", action="append", dest="queues", default=[])
    p.add_argument("--verbose", action="store_true")
    p.add_argument("--mode", choices=["a", "b"], default="a")
    return p


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobsched.toml"
    path.write_text(text)
    return path


def test_defaults_without_file_or_environment() -> None:
    resolved = resolve(parser(), "executor", [], env=ENV, environ={})
    assert (resolved.args.listen, resolved.args.lease, resolved.args.queues) == (
        "127.0.0.1:1",
        30.0,
        [],
    )
    assert {str(s) for s in resolved.sources.values()} == {"default"}
    assert resolved.path is None


def test_file_then_environment_then_flag(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[executor]\nlisten = "0.0.0.0:2"\nlease = 5\nqueues = ["a", "b"]\nverbose = true\n'
        "[client]\nanything = 1\n",
    )
    argv = ["--config", str(path)]
    resolved = resolve(parser(), "executor", argv, env=ENV, environ={})
    args = resolved.args
    assert (args.listen, args.lease, args.queues, args.verbose) == (
        "0.0.0.0:2",
        5.0,
        ["a", "b"],
        True,
    )
    assert str(resolved.sources["listen"]) == f"file {path}"

    environ = {"X_LISTEN": "10.0.0.1:3", "X_QUEUES": "c, d"}
    resolved = resolve(parser(), "executor", argv, env=ENV, environ=environ)
    assert (resolved.args.listen, resolved.args.queues) == ("10.0.0.1:3", ["c", "d"])
    assert str(resolved.sources["listen"]) == "env X_LISTEN"
    assert str(resolved.sources["lease"]) == f"file {path}"

    resolved = resolve(
        parser(), "executor", [*argv, "--listen", "h:4", "--lease", "7"], env=ENV, environ=environ
    )
    assert (resolved.args.listen, resolved.args.lease) == ("h:4", 7.0)
    assert str(resolved.sources["listen"]) == "flag"
    assert str(resolved.sources["lease"]) == "flag"
    assert str(resolved.sources["capacity"]) == "default"


def test_the_file_may_come_from_the_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[executor]\ncapacity = 3\n")
    resolved = resolve(parser(), "executor", [], env=ENV, environ={"JOBSCHED_CONFIG": str(path)})
    assert resolved.args.capacity == 3
    assert resolved.path == path
    assert config_path(["--config=other.toml"], {"JOBSCHED_CONFIG": str(path)}) == Path(
        "other.toml"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[executor]\nlistn = 'x'\n", "[executor] has no key 'listn'"),
        ("[executor]\nlease = 'soon'\n", "lease = 'soon': could not convert"),
        ("[executor]\ncapacity = 1.5\n", "capacity = 1.5: invalid literal"),
        ("[executor]\nverbose = 'yes'\n", "verbose = 'yes': expected true or false"),
        ("[executor]\nqueues = 'a'\n", "queues = 'a': expected a list"),
        ("[executor]\nlisten = ['a']\n", "listen = ['a']: expected a single value"),
        ("[executor]\nmode = 'c'\n", "mode = 'c': must be one of 'a', 'b'"),
        ("[executor]\nlease = true\n", "lease = True: expected a value"),
        ("executor = 1\n", "'executor' must be a table"),
        ("[executor\n", "not valid TOML"),
    ],
)
def test_a_bad_file_is_one_error_naming_the_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SystemExit) as exit_:
        resolve(parser(), "executor", ["--config", str(path)], env=ENV, environ={})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert message in err


def test_a_missing_file_and_a_bad_environment_value_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        resolve(
            parser(), "executor", ["--config", str(tmp_path / "nope.toml")], env=ENV, environ={}
        )
    assert "no such configuration file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        resolve(parser(), "executor", [], env=ENV, environ={"X_VERBOSE": "maybe"})
    assert "X_VERBOSE = 'maybe': expected true or false" in capsys.readouterr().err


def test_bad_flags_still_fail_like_argparse(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        resolve(parser(), "executor", ["--lease", "x"], env=ENV, environ={})
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("invalid float value") == 1  # reported once, not by the silent pre-parse


def test_help_shows_the_effective_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = parser()
    p.add_argument("--shown", default="d", help="default %(default)s")
    path = write(tmp_path, "[executor]\nshown = 'from-file'\n")
    with pytest.raises(SystemExit):
        resolve(p, "executor", ["--config", str(path), "--help"], env=ENV, environ={})
    assert "default from-file" in capsys.readouterr().out


def test_redact_hides_secrets() -> None:
    assert redact("database_url", "postgresql://u:hunter2@db:5432/x") == (
        "postgresql://u:***@db:5432/x"
    )
    assert redact("database_url", "postgresql://u@db/x") == "postgresql://u@db/x"
    assert redact("token", "jsk_abc") == "***"
    assert redact("tls_key", "/etc/key.pem") == "***"
    assert redact("database_password_file", "/run/secrets/pw") == "/run/secrets/pw"
    assert redact("schedulers", ["a:1"]) == ["a:1"]


def test_a_table_no_program_reads_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[executor]\ncapacity = 3\n[schedular]\nlease = 5\n")
    with pytest.raises(SystemExit):
        resolve(parser(), "executor", ["--config", str(path)], env=ENV, environ={})
    err = capsys.readouterr().err
    assert f"{path}: no table [schedular] is read by jobsched" in err


def test_a_repeated_flag_replaces_the_list_of_the_file_and_the_environment(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, '[executor]\nqueues = ["from-file"]\n')
    argv = ["--config", str(path)]
    assert resolve(parser(), "executor", argv, env=ENV, environ={}).args.queues == ["from-file"]
    flagged = resolve(parser(), "executor", [*argv, "--queue", "q1", "--queue", "q2"], env=ENV)
    assert flagged.args.queues == ["q1", "q2"]
    environ = {"X_QUEUES": "e1,e2"}
    assert resolve(parser(), "executor", argv, env=ENV, environ=environ).args.queues == [
        "e1",
        "e2",
    ]
    resolved = resolve(parser(), "executor", [*argv, "--queue", "q"], env=ENV, environ=environ)
    assert resolved.args.queues == ["q"]
    assert str(resolved.sources["queues"]) == "flag"


def test_resolved_names_the_keys_a_file_may_set() -> None:
    resolved = resolve(parser(), "executor", [], env=ENV, environ={})
    assert set(resolved.keys) == {"listen", "lease", "capacity", "queues", "verbose", "mode"}


def test_a_repeated_flag_replaces_the_parsers_own_list_default() -> None:
    unflagged = resolve(parser_with_allow(), "executor", [], env=ENV, environ={})
    assert unflagged.args.allowed == ["PATH", "HOME"]
    flagged = resolve(parser_with_allow(), "executor", ["--allow", "TZ"], env=ENV, environ={})
    assert flagged.args.allowed == ["TZ"]


def parser_with_allow() -> argparse.ArgumentParser:
    p = parser()
    p.add_argument("--allow", action="append", dest="allowed", default=["PATH", "HOME"])
    return p
