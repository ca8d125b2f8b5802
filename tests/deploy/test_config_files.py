"""The example configuration files deploy/config/{dev,staging,prod}.toml.

They parse with tomllib and use only the decided keys, with the right types. A key is its
flag's dest (the flag's name without the dashes, `-` replaced by `_`): where the flag exists
today, the value goes through the entry point's own parser and must come back unchanged. The
keys the decided list names whose flags do not exist yet are listed in ANNOUNCED. Each file is
also read by each program's own configuration loader (what `--config FILE` does), which must
take every key from the file.
"""

from __future__ import annotations

import argparse
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from jobsched.cli import CLIENT, build_parser
from jobsched.config import Program
from tests.deploy.chart import CONFIG_DIR, ENVIRONMENTS

Number = (int, float)
LOG_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def address(value: Any) -> bool:
    return isinstance(value, str) and value.rpartition(":")[2].isdigit()


def strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and v for v in value)


def non_negative(value: Any) -> bool:
    return isinstance(value, Number) and not isinstance(value, bool) and value >= 0


def positive(value: Any) -> bool:
    return non_negative(value) and value > 0


def text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def flag(value: Any) -> bool:
    return isinstance(value, bool)


def level(value: Any) -> bool:
    return value in LOG_LEVELS


def count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# The decided keys per section, each with its check.
KEYS: dict[str, dict[str, Callable[[Any], bool]]] = {
    "scheduler": {
        "listen": address,
        "database_url": text,
        "database_password_file": text,
        "data_dir": text,
        "log_level": level,
        "no_migrate": flag,
        **{
            key: positive
            for key in (
                "heartbeat_interval",
                "lease",
                "ack_timeout",
                "reconnect_grace",
                "poll_interval",
                "cron_poll_interval",
                "leader_tick",
                "leader_renew_timeout",
                "leader_renew_interval",
                "rescue_interval",
                "timeout_grace",
                "presence_interval",
                "health_interval",
                "heartbeat_timeout",
            )
        },
        "max_releases": count,
        "max_concurrent_rpcs": count,
        "max_connection_age": non_negative,  # 0 = off
        "auth": lambda v: v in ("off", "required"),
        "insecure": flag,  # auth off on every interface: the files say why they need it
    },
    "executor": {
        "schedulers": strings,
        "name": text,
        "capacity": lambda v: count(v) and v >= 1,
        "queues": lambda v: isinstance(v, list) and all(isinstance(q, str) for q in v),
        "grace": non_negative,
        "log_level": level,
        "handlers": strings,
    },
    "client": {"address": address, "tenant": text, "timeout": positive},
}

# Decided keys whose flags do not exist yet (none now); once a flag exists, its value is
# checked through the parser like the others.
ANNOUNCED: dict[str, set[str]] = {"scheduler": set(), "executor": set(), "client": set()}

# The keys that hold secrets: never in a file.
SECRETS = {"database_url", "token"}


def load(environment: str) -> dict[str, dict[str, Any]]:
    loaded: dict[str, dict[str, Any]] = tomllib.loads(
        (CONFIG_DIR / f"{environment}.toml").read_text()
    )
    return loaded


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_only_decided_keys_with_the_right_types(environment: str) -> None:
    config = load(environment)
    assert set(config) == set(KEYS), "sections [scheduler], [executor], [client]"
    for section, values in config.items():
        for key, value in values.items():
            assert key in KEYS[section], f"[{section}] {key} is not a decided key"
            assert KEYS[section][key](value), f"[{section}] {key} = {value!r}"
            assert key not in SECRETS, f"[{section}] {key}: secrets never go in the file"


def as_argv(key: str, value: Any, flag_of: dict[str, str]) -> list[str]:
    option = flag_of.get(key, "--" + key.replace("_", "-"))
    if isinstance(value, bool):
        return [option] if value else []
    if isinstance(value, list):
        return [word for item in value for word in (option, str(item))]
    return [option, str(value)]


def parse_or_none(parse: Callable[[list[str]], argparse.Namespace], argv: list[str]) -> Any:
    try:
        return parse(argv)
    except SystemExit:
        return None


def scheduler_parse(argv: list[str]) -> argparse.Namespace:
    from scheduler.flags import parse_args

    return parse_args(argv)


def executor_parse(argv: list[str]) -> argparse.Namespace:
    from executor.flags import parse_args

    return parse_args(argv)


def client_parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args([*argv, "ls"])


PARSERS: dict[str, tuple[Callable[[list[str]], argparse.Namespace], dict[str, str]]] = {
    "scheduler": (scheduler_parse, {}),
    # Repeatable flags are singular; their dest (the key) is plural.
    "executor": (executor_parse, {"schedulers": "--scheduler", "queues": "--queue"}),
    "client": (client_parse, {}),
}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_key_is_its_flags_name(
    environment: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("JOBSCHED_ADDRESS", "JOBSCHED_LISTEN", "JOBSCHED_LOG_LEVEL", "DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    for section, values in load(environment).items():
        parse, flag_of = PARSERS[section]
        for key, value in values.items():
            parsed = parse_or_none(parse, as_argv(key, value, flag_of))
            capsys.readouterr()  # argparse's usage message for a missing flag
            if parsed is None:
                assert key in ANNOUNCED[section], f"[{section}] {key}: no such flag"
                continue
            got = getattr(parsed, key)
            expected = Path(value) if isinstance(got, Path) else value
            assert got == expected, f"[{section}] {key}: {value!r} parsed as {got!r}"


def test_a_misspelt_key_is_caught() -> None:
    """The flag check is not vacuous: a key without a flag that is not announced fails."""
    parse, flag_of = PARSERS["scheduler"]
    assert parse_or_none(parse, as_argv("heartbeat_intervall", 3.0, flag_of)) is None
    assert "heartbeat_intervall" not in KEYS["scheduler"]


def test_each_environment_has_its_character() -> None:
    dev, staging, prod = (load(e) for e in ENVIRONMENTS)
    # dev: small and chatty, migrates itself, loopback only.
    assert dev["scheduler"]["log_level"] == dev["executor"]["log_level"] == "DEBUG"
    assert dev["scheduler"]["listen"].startswith("127.0.0.1:")
    assert dev["scheduler"]["no_migrate"] is False
    assert dev["executor"]["capacity"] < prod["executor"]["capacity"]
    # staging and prod: migrations are a deploy step, connections age out to rebalance.
    for config in (staging, prod):
        assert config["scheduler"]["log_level"] == "INFO"
        assert config["scheduler"]["no_migrate"] is True
        assert config["scheduler"]["listen"].startswith("0.0.0.0:")
        assert config["scheduler"]["max_connection_age"] > 0
        assert config["executor"]["schedulers"][0].startswith("dns:///")
        # A shared file must not name executors: names are unique per connected executor.
        assert "name" not in config["executor"]
    # staging: prod's timings at a smaller size.
    timings = {k: v for k, v in prod["scheduler"].items() if k != "max_connection_age"}
    assert {k: staging["scheduler"][k] for k in timings} == timings
    assert staging["executor"]["capacity"] <= prod["executor"]["capacity"]
    assert prod["scheduler"]["max_connection_age"] >= staging["scheduler"]["max_connection_age"]


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_every_file_is_documented(environment: str) -> None:
    lines = (CONFIG_DIR / f"{environment}.toml").read_text().splitlines()
    assert lines[0].startswith("# jobsched configuration for ")
    comments = sum(1 for line in lines if line.lstrip().startswith("#"))
    assert comments >= 15


def programs() -> dict[str, Program]:
    from executor.flags import PROGRAM as executor
    from scheduler.flags import PROGRAM as scheduler

    return {"scheduler": scheduler, "executor": executor, "client": CLIENT}


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_each_program_reads_its_table(environment: str) -> None:
    path = CONFIG_DIR / f"{environment}.toml"
    config = load(environment)
    for section, program in programs().items():
        argv = ["--config", str(path)] + (["ls"] if section == "client" else [])
        resolved = program.resolve(argv, environ={})
        for key, value in config[section].items():
            assert str(resolved.sources[key]) == f"file {path}", f"[{section}] {key}"
            got = getattr(resolved.args, key)
            expected = Path(value) if isinstance(got, Path) else value
            assert got == expected, f"[{section}] {key}: {value!r} read as {got!r}"


@pytest.mark.parametrize("environment", ["staging", "prod"])
def test_staging_and_prod_require_keys_and_never_serve_insecure(environment: str) -> None:
    scheduler = load(environment)["scheduler"]
    assert scheduler["auth"] == "required"
    assert "insecure" not in scheduler


def test_dev_leaves_auth_off_on_loopback_only() -> None:
    """`make run` stays zero-configuration; compose and the dev chart turn auth on."""
    scheduler = load("dev")["scheduler"]
    assert scheduler.get("auth", "off") == "off"
    assert scheduler["listen"].startswith("127.0.0.1:")
    assert "insecure" not in scheduler
